import { connect } from 'node:net';
import type { BusEvent } from '@werkpilot/shared';
import { waitFor } from './wait-for.js';

/** What an SSE client has read so far from `/api/events`. */
export interface EventStream {
  /** The `data:` messages, parsed, in arrival order. */
  events: BusEvent[];
  /** The comment lines (`: connected`, heartbeats), without the colon. */
  comments: string[];
  /** Ends the stream. */
  close(): void;
}

/**
 * Opens a server-sent events stream, reads it in the background, and resolves once the server's
 * `: connected` comment says the subscription is live (so no event published after this is missed).
 * Throws when the answer is not a 200 event stream.
 */
export async function openEventStream(url: string, headers: Record<string, string> = {}): Promise<EventStream> {
  const controller = new AbortController();
  const response = await fetch(url, { signal: controller.signal, headers: { accept: 'text/event-stream', ...headers } });
  const contentType = response.headers.get('content-type') ?? '';
  if (response.status !== 200 || !contentType.startsWith('text/event-stream')) {
    controller.abort();
    throw new Error(`GET ${url} answered ${response.status} ${contentType}, not an event stream`);
  }
  const stream: EventStream = { events: [], comments: [], close: () => controller.abort() };
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          for (const line of buffer.slice(0, end).split('\n')) {
            if (line.startsWith('data: ')) stream.events.push(JSON.parse(line.slice(6)) as BusEvent);
            else if (line.startsWith(':')) stream.comments.push(line.slice(1).trim());
          }
          buffer = buffer.slice(end + 2);
        }
      }
    } catch {
      // closed by the caller
    }
  })();
  await waitFor(() => stream.comments.includes('connected'), { what: `the event stream ${url} to connect` });
  return stream;
}

/** An SSE client that stopped reading (see `openStalledEventStream`). */
export interface StalledEventStream {
  /**
   * Resolves when the connection has ended. A client that does not read does not see the server's
   * end either: call `resume()` first.
   */
  closed: Promise<void>;
  /** Reads (and discards) again, e.g. to see that the server has ended the stream. */
  resume(): void;
  close(): void;
}

/**
 * Opens `GET path` on a raw TCP connection, reads until the server's `: connected` comment, then
 * stops reading for good, as a client would that hung or sits behind a stalled link: what the
 * server sends next piles up in the socket buffers and then in the server, unless it drops us.
 */
export async function openStalledEventStream(url: string, path = '/api/events', headers: Record<string, string> = {}): Promise<StalledEventStream> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  let closed = false;
  const whenClosed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      closed = true;
      resolve();
    }),
  );
  socket.on('error', () => {});
  const head = Object.entries({ host: `${hostname}:${port}`, accept: 'text/event-stream', ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  socket.write(`GET ${path} HTTP/1.1\r\n${head}\r\n`);
  let received = '';
  const onData = (chunk: Buffer) => {
    received += chunk.toString('latin1');
  };
  socket.on('data', onData);
  await waitFor(() => received.includes(': connected') || closed, { what: `the stalled event stream ${path} to connect` });
  if (!received.startsWith('HTTP/1.1 200')) {
    socket.destroy();
    throw new Error(`GET ${path} answered ${received.split('\r\n')[0]}, not an event stream`);
  }
  socket.off('data', onData);
  socket.pause();
  return {
    closed: whenClosed,
    resume: () => {
      socket.on('data', () => {});
      socket.resume();
    },
    close: () => socket.destroy(),
  };
}
