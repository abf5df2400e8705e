import express, { type RequestHandler } from 'express';

/** Largest JSON body accepted: a run's input may be 1 MiB, with room for its envelope. */
const BODY_LIMIT = '2mb';
/** Deepest nesting a body may have: a run's input may nest 100 levels (api-input.ts), plus its envelope. */
export const MAX_BODY_DEPTH = 128;

/**
 * The JSON body parser of the routes that take a body (run, cancel; Bull Board parses its own, up
 * to 100 kB): bodies sent to other routes are never parsed. It refuses a body nested deeper
 * than MAX_BODY_DEPTH before parsing it: JSON.parse takes a second or more over a 2 MB body of a
 * million `[`, time no request may hold the event loop for. The depth is counted in one pass over
 * the bytes, outside strings.
 */
export function jsonBody(): RequestHandler {
  return express.json({
    limit: BODY_LIMIT,
    verify: (_req, _res, body) => {
      if (nestingOf(body, MAX_BODY_DEPTH) > MAX_BODY_DEPTH) {
        throw Object.assign(new Error(`JSON body nests deeper than ${MAX_BODY_DEPTH} levels`), { status: 400, type: 'entity.too.deep' });
      }
    },
  });
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPENERS = new Set([0x5b, 0x7b]); // [ {
const CLOSERS = new Set([0x5d, 0x7d]); // ] }

/** How deeply `json` nests, counted up to just past `limit`. Malformed JSON is the parser's to refuse. */
function nestingOf(json: Buffer, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let isInString = false;
  for (let i = 0; i < json.length; i++) {
    const byte = json[i]!;
    if (isInString) {
      if (byte === BACKSLASH) i++;
      else if (byte === QUOTE) isInString = false;
    } else if (byte === QUOTE) {
      isInString = true;
    } else if (OPENERS.has(byte)) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (CLOSERS.has(byte)) {
      depth--;
    }
  }
  return deepest;
}
