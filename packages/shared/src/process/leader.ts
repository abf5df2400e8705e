import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import { type Keys, leaderKey } from '../redis/keys.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * Leader election among scheduler replicas: a Redis lease (`SET key id NX PX ttl`) renewed every
 * `renewIntervalMs` by its holder and deleted on shutdown. The holder does the planning work
 * (reconcile, boot, health monitor, nightly); every replica serves HTTP.
 *
 * A leader that stops renewing (crashed, paused, partitioned) loses the lease after `ttlMs` and
 * another replica takes it on its next attempt, so failover takes at most ttl + one retry interval
 * (10 s + 1 s by default).
 * A leader that comes back from a pause must not act on its stale belief: `confirm()` reads the
 * lease, and everything the leader does is preceded by it.
 */

export const DEFAULT_LEADER_TTL_MS = 10_000;

/**
 * What a leader-only write checks inside its own Lua script: the lease key still holds `id`. A
 * leader paused past its lease (or deposed between `confirm()` and its write) then writes nothing.
 */
export interface LeaderFence {
  /** The lease key (it must be passed in KEYS). */
  key: string;
  /** This replica's id, the lease's value while it leads. */
  id: string;
}

/** Extends the lease only if this replica still holds it. KEYS: lease. ARGV: id, ttlMs. */
const RENEW_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

/** Deletes the lease only if this replica holds it (never someone else's). KEYS: lease. ARGV: id. */
const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotLeaseRenew(lease: string, id: string, ttlMs: number): Result<number, Context>;
    werkpilotLeaseRelease(lease: string, id: string): Result<number, Context>;
  }
}

export interface LeaderElectionOptions {
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** This replica's id (host:pid:random); it is the lease's value. */
  id: string;
  ttlMs?: number;
  /** How often the leader renews and followers try to take over; ttl / 3, at most 1 s, unless given. */
  renewIntervalMs?: number;
  clock?: () => number;
}

/**
 * What the leader does, given to `start()` rather than the constructor: the duties usually need
 * the election themselves (`confirm()`, `fence`), so they are built after it.
 */
export interface LeaderDuties {
  /** Called when this replica becomes leader (after the lease is taken); not awaited by renewals. */
  onElected?: () => void | Promise<void>;
  /** Called when it stops being leader (lease lost, or released on shutdown). */
  onDeposed?: () => void | Promise<void>;
}

export class LeaderElection {
  readonly id: string;
  private readonly redis: Redis;
  private readonly key: string;
  private readonly log: Logger;
  private readonly ttlMs: number;
  private readonly renewIntervalMs: number;
  private readonly clock: () => number;
  private duties: LeaderDuties = {};
  private timer: NodeJS.Timeout | undefined;
  private attempt: Promise<void> | undefined;
  private leading = false;
  /** When the lease was last taken or renewed, by this process's clock. */
  private leaseRenewedAt = 0;

  constructor(options: LeaderElectionOptions) {
    this.id = options.id;
    this.redis = options.redis;
    this.key = leaderKey(options.keys);
    this.log = options.log.child({ component: 'leader', replicaId: options.id });
    this.ttlMs = options.ttlMs ?? DEFAULT_LEADER_TTL_MS;
    // Every second at most: a follower notices a dead leader's expired lease within a second.
    this.renewIntervalMs = options.renewIntervalMs ?? Math.max(100, Math.min(1000, Math.floor(this.ttlMs / 3)));
    this.clock = options.clock ?? Date.now;
    defineScripts(this.redis, { 'werkpilotLeaseRenew-1': RENEW_LUA, 'werkpilotLeaseRelease-1': RELEASE_LUA });
  }

  /** The fence for this replica's leader-only writes (see LeaderFence). */
  get fence(): LeaderFence {
    return { key: this.key, id: this.id };
  }

  /** Whether this replica believes it leads (cheap; use `confirm()` before acting). */
  get isLeader(): boolean {
    return this.leading && this.clock() - this.leaseRenewedAt < this.ttlMs;
  }

  /**
   * Tries to take the lease now, then keeps renewing or retrying every interval. Resolves after
   * the first attempt — which waits for Redis while it is away; `stop()` may be called meanwhile.
   */
  async start(duties: LeaderDuties = {}): Promise<void> {
    this.duties = duties;
    this.timer = setInterval(() => void this.attemptOnce(), this.renewIntervalMs);
    await this.attemptOnce();
  }

  /** One attempt at a time: a slow one (Redis away) is not stacked on by the next interval. */
  private attemptOnce(): Promise<void> {
    this.attempt ??= this.tick().finally(() => (this.attempt = undefined));
    return this.attempt;
  }

  /**
   * Whether this replica holds the lease right now, read from Redis. A replica that was paused
   * longer than the ttl finds someone else's id (or none) and steps down before doing anything.
   */
  async confirm(): Promise<boolean> {
    if (!this.leading) return false;
    const holder = await this.redis.get(this.key);
    if (holder === this.id) return true;
    await this.stepDown('lease held by another replica');
    return false;
  }

  /** The current lease holder's id, or null when there is no leader. */
  async currentLeader(): Promise<string | null> {
    return this.redis.get(this.key);
  }

  /** Stops campaigning and releases the lease if held, so a follower takes over at once. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.attempt;
    if (this.leading) {
      await this.redis.werkpilotLeaseRelease(this.key, this.id).catch(() => 0);
      await this.stepDown('shutting down');
    }
  }

  private async tick(): Promise<void> {
    try {
      if (this.leading) {
        const renewed = await this.redis.werkpilotLeaseRenew(this.key, this.id, this.ttlMs);
        if (renewed === 1) this.leaseRenewedAt = this.clock();
        else await this.stepDown('lease lost');
        return;
      }
      const now = this.clock();
      const taken = await this.redis.set(this.key, this.id, 'PX', this.ttlMs, 'NX');
      if (taken !== 'OK') return;
      this.leading = true;
      this.leaseRenewedAt = now;
      this.log.info({ ttlMs: this.ttlMs }, 'elected leader');
      // Not awaited: the leader's work (reconcile, boot) may outlast the ttl, and renewals must go on.
      Promise.resolve()
        .then(() => this.duties.onElected?.())
        .catch((err: unknown) => this.log.error({ err }, 'leader work failed'));
    } catch (err) {
      this.log.warn({ err }, 'leader election attempt failed');
    }
  }

  private async stepDown(why: string): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    this.log.warn({ why }, 'no longer leader');
    try {
      await this.duties.onDeposed?.();
    } catch (err) {
      this.log.warn({ err }, 'onDeposed failed');
    }
  }
}
