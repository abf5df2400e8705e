import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';

export type { Redis };

export interface RedisConnectionOptions {
  url: string;
  /** Shown in CLIENT LIST and in log lines, e.g. `worker:commands`. */
  role: string;
  log: Logger;
}

/**
 * An ioredis connection suited to BullMQ: `maxRetriesPerRequest: null` so commands wait through a
 * reconnect instead of failing, and a capped backoff so a Redis restart is picked up within a
 * second or two. The loss is logged once per outage, not once per retry.
 */
export function createRedisConnection({ url, role, log }: RedisConnectionOptions, extra: RedisOptions = {}): Redis {
  const redis = new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    connectionName: role.replace(/[^A-Za-z0-9:_-]/g, '_'),
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    ...extra,
  });
  // One line when the connection drops (an error, or a clean close by a restarting server) and one
  // when it is back, whatever the number of retries in between.
  let wasReady = false;
  let lostAt: number | undefined;
  const markLost = (reason: string) => {
    if (lostAt !== undefined) return;
    lostAt = Date.now();
    log.warn({ role, err: reason }, 'redis connection lost; reconnecting');
  };
  redis.on('error', (err: Error) => markLost(err.message));
  redis.on('close', () => {
    if (wasReady && redis.status !== 'end') markLost('connection closed');
  });
  redis.on('ready', () => {
    wasReady = true;
    if (lostAt !== undefined) log.info({ role, downMs: Date.now() - lostAt }, 'redis connection restored');
    lostAt = undefined;
  });
  return redis;
}

/**
 * `maxRetriesPerRequest` for a connection that serves requests rather than runs (the scheduler):
 * ioredis fails the commands waiting in its offline queue every fourth reconnect attempt (with the
 * backoff above: about 1.4 s into an outage — a plain Redis restart is over by then — and every 8 s
 * after) instead of keeping them until Redis returns, so an outage cannot grow the queue without
 * bound. Workers keep `null`: a finished run's record must wait for Redis rather than be dropped,
 * and what a worker queues is bounded by its concurrency and its one-at-a-time timers.
 */
export const BOUNDED_RETRIES_PER_REQUEST = 3;

/**
 * Closes a connection for good: QUIT when Redis answers (pending replies arrive first), else an
 * immediate disconnect — QUIT would wait for a reconnect that may never come.
 */
export async function closeRedisConnection(redis: Redis): Promise<void> {
  if (redis.status === 'ready') await redis.quit().catch(() => redis.disconnect());
  else redis.disconnect();
}

const CONNECTION_ERROR = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EHOSTUNREACH|Connection is closed|Socket closed|connect ETIMEDOUT|LOADING/i;

/**
 * Whether an error only says Redis is unreachable. BullMQ's Worker and Queue re-emit these for
 * every retry of every connection; the connection logs the outage once, so listeners skip them.
 */
export function isConnectionError(err: unknown): boolean {
  return err instanceof Error && CONNECTION_ERROR.test(err.message);
}

/** Whether something answers PING at `url` within `timeoutMs`. */
export async function redisAnswers(url: string, timeoutMs = 1000): Promise<boolean> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: timeoutMs, enableOfflineQueue: false });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}
