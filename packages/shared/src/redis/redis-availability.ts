import type { Redis } from 'ioredis';

/** Whether Redis answers, and if not, why (for `/readyz` and a process's own readiness). */
export type Availability = { available: true } | { available: false; reason: string };

/** How long a probe that found Redis not answering stands as the answer (while probes go on behind it). */
const FAILURE_REUSE_MS = 1000;

export interface RedisAvailabilityOptions {
  redis: Redis;
  /**
   * A connection of its own for the PING. Without one the PING queues behind every command the
   * process has in flight on `redis`, so a burst of requests (hundreds of API calls at once) reads
   * as a frozen Redis and is answered 503 although Redis is fine. Default: `redis`.
   */
  probe?: Redis;
  /** How long a PING may take before Redis counts as unavailable. Default 500. */
  probeTimeoutMs?: number;
  /** How long a probe's answer is reused by later checks. Default 0: only checks made while a probe is in flight share it. */
  reuseMs?: number;
  clock?: () => number;
}

/**
 * Answers "is Redis there?" within a bounded time, whatever Redis does. A connection that is not
 * `ready` (refused, reconnecting, not yet connected) is unavailable at once, without I/O; a ready
 * one is probed with PING, raced against `probeTimeoutMs` — a frozen Redis (paused, swapping, a
 * long Lua script) keeps the socket open and never answers, and only the timeout notices that.
 * Probes are single-flight, so a burst of concurrent checks costs one PING; once a probe has
 * failed, checks answer at once from it for up to a second while the next probe runs behind them.
 *
 * Commands already sent are not cancelled: callers use the verdict to refuse new work (HTTP 503)
 * instead of queueing it behind a Redis that does not answer.
 */
export class RedisAvailability {
  private readonly redis: Redis;
  private readonly probeConnection: Redis;
  private readonly probeTimeoutMs: number;
  private readonly reuseMs: number;
  private readonly clock: () => number;
  private lastError: string | undefined;
  private probe: Promise<Availability> | undefined;
  private lastProbe: { at: number; result: Availability } | undefined;

  constructor({ redis, probe = redis, probeTimeoutMs = 500, reuseMs = 0, clock = Date.now }: RedisAvailabilityOptions) {
    this.redis = redis;
    this.probeConnection = probe;
    this.probeTimeoutMs = probeTimeoutMs;
    this.reuseMs = reuseMs;
    this.clock = clock;
    redis.on('error', (err: Error) => (this.lastError = err.message));
    redis.on('ready', () => (this.lastError = undefined));
  }

  /** Whether the connection is up (no I/O; says nothing about a frozen Redis). */
  get isConnected(): boolean {
    return this.redis.status === 'ready';
  }

  /** Whether the last probe found Redis not answering and none has succeeded since. */
  get hasFailedLastProbe(): boolean {
    return this.lastProbe?.result.available === false;
  }

  /** The verdict, within `probeTimeoutMs`: unavailable at once while disconnected, else by PING. */
  check(): Promise<Availability> {
    if (!this.isConnected) return Promise.resolve(this.disconnected());
    const last = this.lastProbe;
    const age = last ? this.clock() - last.at : Infinity;
    if (last && !last.result.available && age < FAILURE_REUSE_MS) {
      // Answer at once; a probe in the background notices Redis coming back.
      this.probe ??= this.ping().finally(() => (this.probe = undefined));
      return Promise.resolve(last.result);
    }
    if (last && age < this.reuseMs) return Promise.resolve(last.result);
    this.probe ??= this.ping().finally(() => (this.probe = undefined));
    return this.probe;
  }

  private disconnected(): Availability {
    const status = this.redis.status;
    const state = status === 'wait' || status === 'connecting' ? 'not connected yet' : `connection ${status}`;
    return { available: false, reason: `redis unavailable: ${state}${this.lastError ? ` (${this.lastError})` : ''}` };
  }

  private async ping(): Promise<Availability> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<Availability>((resolve) => {
      // Past the timers phase first: on a busy event loop the PONG may already wait to be read, and
      // it must win over a timer that merely fired in the same turn.
      timer = setTimeout(() => setImmediate(() => resolve({ available: false, reason: `redis unavailable: no answer to PING within ${this.probeTimeoutMs} ms` })), this.probeTimeoutMs);
    });
    const answered = this.probeConnection.ping().then(
      (): Availability => ({ available: true }),
      (err: unknown): Availability => ({ available: false, reason: `redis unavailable: ${(err as Error).message}` }),
    );
    const result = await Promise.race([answered, timedOut]);
    clearTimeout(timer);
    this.lastProbe = { at: this.clock(), result };
    return result;
  }
}
