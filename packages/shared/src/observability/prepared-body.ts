import { setImmediate as nextTurn } from 'node:timers/promises';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

/**
 * Response bodies made of segments that outlive a build. A segment holds some bytes and, made on
 * first demand and then kept, their raw DEFLATE ended by a sync flush: such streams concatenate
 * into one valid DEFLATE stream (pigz's technique), so the gzip of a body whose segments mostly did
 * not change since the last build costs only the compression of the segments that did, plus a
 * CRC-32 over the bytes. Bodies of tens of megabytes are sent as their list of segments.
 */

export interface BodySegment {
  readonly bytes: Buffer;
  /** Raw DEFLATE of `bytes`, sync-flushed (no final block); the same promise for every caller. */
  deflated(): Promise<Buffer>;
}

/** A body as sent: a list of buffers. */
export interface EncodedBody {
  readonly byteLength: number;
  readonly chunks: readonly Buffer[];
}

/** A response body prepared once and served to every request that wants it. */
export interface PreparedBody extends EncodedBody {
  readonly contentType: string;
  /** Weak: the same build's body under either encoding. */
  readonly etag: string;
  /** The gzip of the body; the same promise for every caller. */
  gzipped(): Promise<EncodedBody>;
}

/**
 * zlib level 1: on Prometheus text and the JSON snapshot it keeps most of the ratio of the default
 * level (both are very repetitive) at several times the speed.
 */
const DEFLATE_OPTIONS: zlib.ZlibOptions = { level: zlib.constants.Z_BEST_SPEED, finishFlush: zlib.constants.Z_SYNC_FLUSH };
const deflateRaw = promisify<zlib.InputType, zlib.ZlibOptions, Buffer>(zlib.deflateRaw);
/** gzip member header: magic, DEFLATE, no flags, no mtime, no extra flags, OS unknown. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]);
/** An empty stored block with the final bit: ends the concatenated stream (the segments end byte-aligned). */
const FINAL_BLOCK = Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]);
/** Bytes checksummed between two yields to the event loop. */
const CRC_BYTES_PER_TURN = 4 * 1024 * 1024;

export function bodySegment(text: string): BodySegment {
  const bytes = Buffer.from(text, 'utf8');
  let deflated: Promise<Buffer> | undefined;
  return { bytes, deflated: () => (deflated ??= compressInTurn(bytes)) };
}

/**
 * Compressions run a few at a time: each holds a zlib stream (hundreds of KB of state), and a
 * first gzip of a large body would otherwise open hundreds at once.
 */
const COMPRESSIONS_AT_ONCE = 2;
let running = 0;
const waiting: (() => void)[] = [];

async function compressInTurn(bytes: Buffer): Promise<Buffer> {
  if (running >= COMPRESSIONS_AT_ONCE) await new Promise<void>((resolve) => waiting.push(resolve));
  running += 1;
  try {
    return await deflateRaw(bytes, DEFLATE_OPTIONS);
  } finally {
    running -= 1;
    waiting.shift()?.();
  }
}

export function prepareBody(segments: readonly BodySegment[], { contentType, etag }: { contentType: string; etag: string }): PreparedBody {
  const chunks = segments.map((s) => s.bytes).filter((b) => b.length > 0);
  let gzip: Promise<EncodedBody> | undefined;
  return {
    contentType,
    etag,
    byteLength: chunks.reduce((n, c) => n + c.length, 0),
    chunks,
    gzipped: () => (gzip ??= gzipOf(segments.filter((s) => s.bytes.length > 0))),
  };
}

async function gzipOf(segments: readonly BodySegment[]): Promise<EncodedBody> {
  const [deflated, crc] = await Promise.all([Promise.all(segments.map((s) => s.deflated())), crc32Of(segments.map((s) => s.bytes))]);
  const length = segments.reduce((n, s) => n + s.bytes.length, 0);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc, 0);
  trailer.writeUInt32LE(length % 0x100000000, 4);
  const chunks = [GZIP_HEADER, ...deflated, FINAL_BLOCK, trailer];
  return { chunks, byteLength: chunks.reduce((n, c) => n + c.length, 0) };
}

/** CRC-32 of the buffers in sequence, yielding to the event loop every few megabytes. */
async function crc32Of(buffers: readonly Buffer[]): Promise<number> {
  let crc = 0;
  let sinceYield = 0;
  for (const buffer of buffers) {
    crc = crc32(buffer, crc);
    sinceYield += buffer.length;
    if (sinceYield >= CRC_BYTES_PER_TURN) {
      sinceYield = 0;
      await nextTurn();
    }
  }
  return crc;
}

/** zlib's CRC-32 (Node ≥ 20.15), or a table-driven one on older runtimes. */
const crc32: (data: Buffer, initial: number) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === 'function' ? (zlib as unknown as { crc32: (d: Buffer, v: number) => number }).crc32 : tableCrc32;

let table: Int32Array | undefined;
function tableCrc32(data: Buffer, initial: number): number {
  if (!table) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n += 1) {
      let c = n;
      for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
  }
  let crc = ~initial;
  for (let i = 0; i < data.length; i += 1) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}
