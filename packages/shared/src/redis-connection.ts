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
  let isDown = false;
  redis.on('error', (err: Error) => {
    if (!isDown) log.warn({ role, err: err.message }, 'redis connection lost; reconnecting');
    isDown = true;
  });
  redis.on('ready', () => {
    if (isDown) log.info({ role }, 'redis connection restored');
    isDown = false;
  });
  return redis;
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
