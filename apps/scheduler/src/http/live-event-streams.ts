import type { Response } from 'express';
import type { BusEvent, EventBus, EventFilter, Logger } from '@werkpilot/shared';

export interface LiveStreamLimits {
  /** Streams served at once (SSE_MAX_CLIENTS); one more is refused with 503 and Retry-After. */
  maxClients: number;
  /**
   * Bytes a stream may have waiting in this process, beyond what the kernel's socket buffers took:
   * a client that reads slower than events arrive is dropped when it falls this far behind.
   */
  maxBufferedBytes: number;
  /** A stream whose socket has not drained for this long is dropped, however little it holds. */
  stallMs: number;
  /** Interval of the `: heartbeat` comment that keeps proxies from closing an idle stream. */
  heartbeatMs: number;
}

export const DEFAULT_LIVE_STREAM_LIMITS: LiveStreamLimits = {
  maxClients: 100,
  maxBufferedBytes: 256 * 1024,
  stallMs: 30_000,
  heartbeatMs: 15_000,
};

/** Events written to the streams in one go, at most. */
const MAX_BURST = 64;

/**
 * Bytes handed to sockets in one turn of the event loop, at most; the rest of a burst's fan-out
 * goes on in the next turn. A client that never reads still takes megabytes before its socket
 * pushes back (loopback and LAN socket buffers are large), so a flood costs the scheduler copying
 * into the kernel; in slices, `/healthz`, the API and the leader lease get their turn in between.
 */
const MAX_BYTES_PER_TURN = 256 * 1024;

/**
 * Events waiting for their fan-out, at most. A flood faster than the streams take it drops every
 * stream (each reconnects and reads on from the live feed) rather than queueing it here.
 */
const MAX_PENDING_EVENTS = 20_000;

/** How long a refused client is asked to wait before it tries again (`Retry-After`, seconds). */
export const RETRY_AFTER_SECONDS = 10;

interface Client {
  res: Response;
  /** Undefined: the stream takes every event. */
  filter: EventFilter | undefined;
  /** When a write last returned false with no `drain` since; undefined while the client keeps up. */
  blockedSince: number | undefined;
}

/**
 * The live event streams of `GET /api/events`: one bus subscription for all of them, each event
 * serialised once and the same frame written to every stream it passes, and bounds so that clients
 * cannot make the scheduler hold their backlog. `res.write` backpressure is honoured: a stream that
 * falls `maxBufferedBytes` behind, or whose socket does not drain for `stallMs`, is dropped (its
 * socket destroyed; an EventSource reconnects after `retry:` and reads on from the live feed).
 */
export class LiveEventStreams {
  private readonly clients = new Set<Client>();
  private readonly bus: EventBus;
  private readonly log: Logger;
  private readonly limits: LiveStreamLimits;
  private readonly clock: () => number;
  private unsubscribe: (() => void) | undefined;
  private subscribing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private backlogCheck: NodeJS.Immediate | undefined;
  /** Events not yet written, in order. */
  private pending: BusEvent[] = [];
  /** The burst whose fan-out is under way: its frames and the clients still to write it to. */
  private fanOut: { events: BusEvent[]; frames: (string | undefined)[]; everything: Buffer | undefined; clients: Client[]; next: number } | undefined;
  private flushing: NodeJS.Immediate | undefined;
  private lastHeartbeatAt = 0;
  /** Streams dropped for falling behind, since start (for tests and logs). */
  dropped = 0;

  constructor({ bus, log, limits = {}, clock = Date.now }: { bus: EventBus; log: Logger; limits?: Partial<LiveStreamLimits>; clock?: () => number }) {
    this.bus = bus;
    this.log = log.child({ component: 'live-events' });
    this.limits = { ...DEFAULT_LIVE_STREAM_LIMITS, ...limits };
    this.clock = clock;
  }

  /** Streams open now. */
  get size(): number {
    return this.clients.size;
  }

  get maxClients(): number {
    return this.limits.maxClients;
  }

  /** Whether one more stream may open. */
  hasRoom(): boolean {
    return this.clients.size < this.limits.maxClients;
  }

  /**
   * Turns `res` into an event stream of what `filter` passes (every event without one). Resolves
   * once the bus subscription is live (the `: connected` comment is written then), so no event
   * published afterwards is missed. The caller checks `hasRoom()` first.
   */
  async open(res: Response, filter?: EventFilter): Promise<void> {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // nginx: do not buffer the stream
    });
    res.socket?.setNoDelay(true);
    const client: Client = { res, filter, blockedSince: undefined };
    this.clients.add(client);
    res.on('close', () => this.remove(client));
    this.startTimer();
    try {
      await this.ensureSubscribed();
    } catch (err) {
      this.log.warn({ err }, 'event stream could not subscribe to the bus');
      res.end();
      return;
    }
    if (this.clients.has(client)) this.write(client, 'retry: 3000\n: connected\n\n');
  }

  private ensureSubscribed(): Promise<void> {
    this.subscribing ??= this.bus
      .subscribe((event) => this.broadcast(event))
      .then(
        (stop) => {
          this.unsubscribe = stop;
          // Every stream closed while the subscription was being made.
          if (this.clients.size === 0) this.release();
        },
        (err: unknown) => {
          this.subscribing = undefined;
          throw err;
        },
      );
    return this.subscribing;
  }

  /**
   * Events arrive in bursts (one read from the subscriber connection holds many): they are written
   * once per burst (at most MAX_BURST events), one write per stream instead of one per event and
   * stream, so a flood costs the event loop a few writes per client, not thousands. A burst is one
   * Buffer shared by every stream that takes all of it: a socket keeps what it has not sent as a
   * reference to that Buffer, where a string would be copied once per socket. The fan-out runs in
   * slices of MAX_BYTES_PER_TURN, each in its own turn of the event loop.
   */
  private broadcast(event: BusEvent): void {
    this.pending.push(event);
    if (this.pending.length > MAX_PENDING_EVENTS) {
      for (const client of [...this.clients]) this.drop(client, `${MAX_PENDING_EVENTS} events arrived faster than the streams took them`);
      return;
    }
    this.flushing ??= setImmediate(() => this.flush());
  }

  /** One slice of fan-out: the current burst to the next clients, until MAX_BYTES_PER_TURN. */
  private flush(): void {
    this.flushing = undefined;
    let budget = MAX_BYTES_PER_TURN;
    while (budget > 0) {
      if (!this.fanOut) {
        if (this.pending.length === 0) return;
        const events = this.pending.splice(0, MAX_BURST);
        this.fanOut = { events, frames: [], everything: undefined, clients: [...this.clients], next: 0 };
      }
      const burst = this.fanOut;
      const frame = (i: number) => (burst.frames[i] ??= `data: ${JSON.stringify(burst.events[i])}\n\n`);
      while (burst.next < burst.clients.length && budget > 0) {
        const client = burst.clients[burst.next++]!;
        if (!this.clients.has(client)) continue;
        const { filter } = client;
        const wanted = filter ? burst.events.flatMap((event, i) => (filter(event) ? [i] : [])) : undefined;
        if (wanted?.length === 0) continue;
        const isEverything = wanted === undefined || wanted.length === burst.events.length;
        if (isEverything) burst.everything ??= Buffer.from(burst.events.map((_, i) => frame(i)).join(''));
        const chunk = isEverything ? burst.everything! : Buffer.from(wanted.map(frame).join(''));
        this.write(client, chunk);
        budget -= chunk.length;
      }
      if (burst.next >= burst.clients.length) this.fanOut = undefined;
    }
    this.flushing = setImmediate(() => this.flush());
  }

  private write(client: Client, chunk: string | Buffer): void {
    const { res } = client;
    if (res.writableEnded || res.destroyed) return;
    if (res.write(chunk)) return;
    this.scheduleBacklogCheck();
    if (client.blockedSince === undefined) {
      client.blockedSince = this.clock();
      res.once('drain', () => {
        client.blockedSince = undefined;
      });
    }
  }

  /**
   * Writes made in one tick are all counted as unsent until the event loop turns, even to a client
   * that reads at once: a burst (at most MAX_BURST events) is let through, and the backlog is judged
   * once the sockets have had their turn.
   */
  private scheduleBacklogCheck(): void {
    if (this.backlogCheck) return;
    this.backlogCheck = setImmediate(() => {
      this.backlogCheck = undefined;
      for (const client of [...this.clients]) {
        if (client.res.writableLength > this.limits.maxBufferedBytes) this.drop(client, `it fell more than ${this.limits.maxBufferedBytes} bytes behind`);
      }
    });
  }

  private drop(client: Client, reason: string): void {
    this.dropped++;
    this.log.warn(
      { remoteAddress: client.res.socket?.remoteAddress, bufferedBytes: client.res.writableLength, streams: this.clients.size - 1 },
      `dropped a live event stream: ${reason} (it reconnects and reads on from the live feed)`,
    );
    this.remove(client);
    client.res.destroy();
  }

  private remove(client: Client): void {
    if (!this.clients.delete(client)) return;
    if (this.clients.size === 0) this.release();
  }

  /** With no stream left, the bus handler and the timer go too. */
  private release(): void {
    if (this.clients.size > 0) return;
    this.pending = [];
    this.fanOut = undefined;
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.unsubscribe) {
      this.unsubscribe();
      this.unsubscribe = undefined;
      this.subscribing = undefined;
    }
  }

  /** One timer for all streams: heartbeats, and dropping streams that stalled. */
  private startTimer(): void {
    if (this.timer) return;
    this.lastHeartbeatAt = this.clock();
    const tickMs = Math.max(10, Math.min(this.limits.heartbeatMs, this.limits.stallMs / 2, 1000));
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  private tick(): void {
    const now = this.clock();
    for (const client of [...this.clients]) {
      if (client.blockedSince !== undefined && now - client.blockedSince >= this.limits.stallMs) {
        this.drop(client, `its socket has not drained for ${this.limits.stallMs} ms`);
      }
    }
    if (now - this.lastHeartbeatAt >= this.limits.heartbeatMs) {
      this.lastHeartbeatAt = now;
      const heartbeat = `: heartbeat ${new Date(now).toISOString()}\n\n`;
      for (const client of [...this.clients]) this.write(client, heartbeat);
    }
  }
}
