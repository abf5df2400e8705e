import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { type Keys, liveWorkersKey, workerKey } from '../redis/keys.js';

/** What a worker says about itself in each heartbeat (and what `system.workers[]` lists). */
export interface WorkerInfo {
  id: string;
  host: string;
  pid: number;
  concurrency: number;
  /** Runs executing on this worker right now. */
  active: number;
  heapPercent: number;
  rssMB: number;
  heapUsedMB?: number;
  /** Whether the memory monitor has this worker handing back priority-3 runs. */
  isUnderMemoryPressure?: boolean;
  /** ISO-8601. */
  startedAt: string;
  version: string;
  /** ISO-8601 of this heartbeat. */
  lastSeenAt: string;
}

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5000;

/**
 * Writes the heartbeat and indexes it in one MULTI, so the index never names a worker whose
 * record was written with a different expiry. Invariant: a member's score is its record's expiry.
 */
function writeHeartbeat(redis: Redis, keys: Keys, info: WorkerInfo, now: number, ttlMs: number) {
  return redis
    .multi()
    .set(workerKey(keys, info.id), JSON.stringify(info), 'PX', ttlMs)
    .zadd(liveWorkersKey(keys), now + ttlMs, info.id)
    .exec();
}

/**
 * The workers whose heartbeat has not expired, sorted by id. A worker killed with SIGKILL drops
 * out of this list within its TTL (3 × the heartbeat interval by default); one that shuts down
 * gracefully removes itself at once. Expired index entries are pruned on the way (idempotent).
 */
export async function listLiveWorkers({ redis, keys, clock = Date.now }: { redis: Redis; keys: Keys; clock?: () => number }): Promise<WorkerInfo[]> {
  const now = clock();
  const index = liveWorkersKey(keys);
  const [, ids] = await Promise.all([redis.zremrangebyscore(index, '-inf', `(${now}`), redis.zrangebyscore(index, now, '+inf')]);
  if (ids.length === 0) return [];
  const records = await redis.mget(ids.map((id) => workerKey(keys, id)));
  const workers: WorkerInfo[] = [];
  for (const json of records) {
    if (json === null) continue;
    try {
      workers.push(JSON.parse(json) as WorkerInfo);
    } catch {
      // A record we cannot read is treated as absent; its TTL removes it.
    }
  }
  return workers.sort((a, b) => a.id.localeCompare(b.id));
}

/** Whether at least one worker is alive (for the health monitor's "no live worker" rule). */
export async function hasLiveWorker(deps: { redis: Redis; keys: Keys; clock?: () => number }): Promise<boolean> {
  return (await listLiveWorkers(deps)).length > 0;
}

export interface WorkerHeartbeatOptions {
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** Reads the worker's current figures; called on every beat. */
  describe: () => Omit<WorkerInfo, 'lastSeenAt'>;
  intervalMs?: number;
  /** How long a heartbeat stays valid; 3 × the interval unless given. */
  ttlMs?: number;
  clock?: () => number;
}

/**
 * A worker's heartbeat: writes its `WorkerInfo` every `intervalMs` with a TTL. A beat that fails
 * (Redis down) is skipped quietly — the connection logs the outage — and the next one restores it.
 */
export class WorkerHeartbeat {
  private readonly options: WorkerHeartbeatOptions;
  private readonly intervalMs: number;
  private readonly ttlMs: number;
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> | undefined;

  constructor(options: WorkerHeartbeatOptions) {
    this.options = options;
    this.intervalMs = options.intervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    this.ttlMs = options.ttlMs ?? this.intervalMs * 3;
    this.clock = options.clock ?? Date.now;
  }

  /** Writes one heartbeat now and then every interval. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => {
      if (!this.beating) this.beating = this.beat().finally(() => (this.beating = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Writes one heartbeat now. */
  async beat(): Promise<void> {
    const now = this.clock();
    const info: WorkerInfo = { ...this.options.describe(), lastSeenAt: new Date(now).toISOString() };
    try {
      await writeHeartbeat(this.options.redis, this.options.keys, info, now, this.ttlMs);
    } catch (err) {
      this.options.log.debug({ err }, 'heartbeat write failed');
    }
  }

  /** Stops beating; the record stays until `remove()` or its TTL. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Stops and deletes this worker's record, so it leaves the live list at once (graceful shutdown). */
  async remove(): Promise<void> {
    this.stop();
    await this.beating;
    const id = this.options.describe().id;
    await this.options.redis.multi().del(workerKey(this.options.keys, id)).zrem(liveWorkersKey(this.options.keys), id).exec();
  }
}
