import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { provisionRedis, type ProvisionedRedis, type RedisTarget } from '@werkpilot/shared';

/** The Redis one scenario runs against, and the clients it opened. */
export interface BenchRedis {
  readonly url: string;
  /** The same server as a target, for code that also runs on a cluster (BenchCluster). */
  readonly target: RedisTarget;
  /** Whether this Redis was started for the scenario (a child redis-server or a container). */
  readonly isOwned: boolean;
  /** A fresh key prefix, so raw and ours (and repeated rounds) never share keys. */
  prefix(label: string): string;
  /** A new connection with BullMQ's required options; closed by `close()`. */
  client(): Redis;
  /** Cumulative `calls` per command from INFO commandstats. */
  commandCounts(): Promise<Map<string, number>>;
  /** Microseconds Redis spent in each command so far (a script's includes the commands it called). */
  commandMicros(): Promise<Map<string, number>>;
  /** CPU seconds the Redis server has used (user + system, all threads), from INFO cpu. */
  cpuSeconds(): Promise<number>;
  /** `cpuSeconds()` as a list of one, the shape a cluster gives per master. */
  cpuSecondsByServer(): Promise<number[]>;
  close(): Promise<void>;
}

/**
 * A fresh Redis for one scenario: `REDIS_URL` when set (shared, so scenarios isolate by prefix),
 * else a `redis-server` child with `hz 100` — as the Redis `pnpm start` spawns — stopped afterwards.
 */
export async function openBenchRedis(): Promise<BenchRedis> {
  const external = process.env.REDIS_URL;
  const provisioned: ProvisionedRedis = await provisionRedis({ ...(external ? { url: external } : {}), hz: 100 });
  if (external && provisioned.source !== 'external') {
    await provisioned.stop();
    throw new Error(`REDIS_URL=${external} does not answer PING`);
  }
  const clients: Redis[] = [];
  const client = () => {
    const redis = new Redis(provisioned.url, { maxRetriesPerRequest: null });
    redis.on('error', () => {});
    clients.push(redis);
    return redis;
  };
  const admin = client();
  const prefixes: string[] = [];
  const cpuSeconds = () => readCpuSeconds(admin);
  return {
    url: provisioned.url,
    target: { kind: 'single', url: provisioned.url },
    isOwned: provisioned.source !== 'external',
    prefix: (label) => {
      const prefix = `bench-${label}-${randomBytes(3).toString('hex')}`;
      prefixes.push(prefix);
      return prefix;
    },
    client,
    commandCounts: async () => parseCommandStats(await admin.info('commandstats')),
    commandMicros: async () => parseCommandStats(await admin.info('commandstats'), 'usec'),
    cpuSeconds,
    cpuSecondsByServer: async () => [await cpuSeconds()],
    close: async () => {
      // A Redis we did not start keeps running: take our keys out of it.
      if (provisioned.source === 'external') for (const prefix of prefixes) await deleteKeys(admin, `{${prefix}}:*`);
      await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
      await provisioned.stop();
    },
  };
}

/** CPU seconds one Redis server has used (user + system, all threads), from INFO cpu. */
export async function readCpuSeconds(server: Redis): Promise<number> {
  const info = await server.info('cpu');
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return field('used_cpu_user') + field('used_cpu_sys');
}

async function deleteKeys(redis: Redis, pattern: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}

/** `cmdstat_evalsha:calls=12,usec=...` lines into a map of command → calls. */
export function parseCommandStats(info: string, field: 'calls' | 'usec' = 'calls'): Map<string, number> {
  const counts = new Map<string, number>();
  const pattern = new RegExp(`^cmdstat_([^:]+):.*\\b${field}=(\\d+)`);
  for (const line of info.split('\n')) {
    const match = pattern.exec(line.trim());
    if (match) counts.set(match[1]!, Number(match[2]));
  }
  return counts;
}

/** What the server is: version and hz, for the results' header. */
export async function describeServer(url: string): Promise<{ version: string; hz: number }> {
  const redis = new Redis(url, { maxRetriesPerRequest: null, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const info = await redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
    const hz = Number(/^hz:(\d+)/m.exec(info)?.[1] ?? NaN);
    return { version, hz };
  } finally {
    redis.disconnect();
  }
}
