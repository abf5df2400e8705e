import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisTarget } from './redis-target.js';

export type { Redis };

export type RedisConnectionOptions = {
  /** Shown in CLIENT LIST and in log lines, e.g. `worker:commands`. */
  role: string;
  log: Logger;
} /** Where Redis is (config.redisTarget): one server, a Sentinel set or a cluster. */ & (
  | { target: RedisTarget }
  /** Shorthand for `{ kind: 'single', url }`. */
  | { url: string }
);

const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000);

/**
 * Reconnects and sends the command again when the server it went to was just demoted from primary to
 * replica: writes answer READONLY, and a blocking command in flight (BullMQ's BZPOPMIN, our BLPOP)
 * is ended with "UNBLOCKED force unblock ... instance state changed". Sent again, the command reaches
 * the new primary (through the sentinels, or on a cluster, whose node connections do not reconnect,
 * as a closed connection the cluster retries on the slot's new master). Without this BullMQ gets
 * the UNBLOCKED error, forgets when its next delayed run is due, and blocks for up to 10 s before
 * it looks again: a 10 s pause of cron runs, seen after a CLUSTER FAILOVER.
 */
const reconnectOnFailover = (err: Error) => (err.message.startsWith('READONLY') || err.message.startsWith('UNBLOCKED force unblock') ? 2 : false);

/**
 * The ioredis client for a target. A Cluster is handed out under the `Redis` type: the commands
 * this code base sends (all keys under one hash tag, see keys.ts; Lua with every key in KEYS;
 * MULTI and pipelines on one slot) behave the same on both, BullMQ takes either, and the two
 * places where the classes differ — `duplicate()` and `options` — go through
 * duplicateRedisConnection() below.
 */
function clientFor(target: RedisTarget, options: RedisOptions): Redis {
  switch (target.kind) {
    case 'single':
      return new Redis(target.url, options);
    case 'sentinel':
      return new Redis({
        ...options,
        sentinels: target.sentinels,
        name: target.name,
        // The sentinels share the data nodes' password here; a separate sentinel password is not configurable (yet).
        ...(target.password !== undefined ? { password: target.password, sentinelPassword: target.password } : {}),
        // Subscribes to the sentinels' +switch-master and reconnects at once instead of on the next error.
        failoverDetector: true,
        sentinelRetryStrategy: retryStrategy,
        reconnectOnError: reconnectOnFailover,
      });
    case 'cluster': {
      // Node connections never reconnect on their own in a cluster (ioredis waits for MOVED and
      // refetches the slots instead), so a retryStrategy here would only mislead.
      const { lazyConnect, retryStrategy: _unused, ...redisOptions } = options;
      const clusterOptions: ClusterOptions = {
        ...(lazyConnect !== undefined ? { lazyConnect } : {}),
        // No ready check (CLUSTER INFO on a random node after the slots are fetched): when it fails,
        // ioredis reconnects but never settles the promise the caller of connect() holds
        // (https://github.com/redis/ioredis/issues/709, PR #741 unmerged). While a killed master's
        // slots wait for their replica the check always fails (cluster_state:fail, or the node it
        // picked is the dead one), and BullMQ's worker calls connect() exactly then: its watchdog
        // resets the blocking connection when a BZPOPMIN outlives its timeout, and awaits the
        // reconnect before it fetches again. The worker stalled for good (seen in about one SIGKILL
        // failover in three). Without the check the cluster is ready once it knows the slots, and
        // commands for a slot without a master wait in the retries below instead.
        enableReadyCheck: false,
        clusterRetryStrategy: retryStrategy,
        // While a master fails over, its slots answer with a closed connection, MOVED to the dead
        // node, CLUSTERDOWN or TRYAGAIN until the replica is elected (cluster-node-timeout plus an
        // election: seconds). ioredis retries each of those up to maxRedirections times; 150 retries
        // about 200 ms apart let a command wait through about 30 s of failover, as commands wait
        // through a reconnect on a single Redis. With the default 16 they fail after about 2 s, and
        // a BullMQ worker whose blocking fetch failed that way then sleeps up to 10 s in its next
        // block before it looks at the delayed runs again (measured: 9.5 s without a cron run).
        maxRedirections: 150,
        retryDelayOnFailover: 200,
        retryDelayOnMoved: 50,
        retryDelayOnClusterDown: 200,
        retryDelayOnTryAgain: 200,
        redisOptions: {
          ...redisOptions,
          ...(target.password !== undefined ? { password: target.password } : {}),
          reconnectOnError: reconnectOnFailover,
        },
      };
      return new Cluster(target.nodes, clusterOptions) as unknown as Redis;
    }
  }
}

/** Whether a client built here is a Cluster (ioredis marks both classes with `isCluster`). */
export function isClusterConnection(redis: Redis): boolean {
  return (redis as unknown as { isCluster?: boolean }).isCluster === true;
}

/** The connection name a client was given (createRedisConnection's role), for naming its duplicates. */
export function connectionNameOf(redis: Redis): string | undefined {
  if (isClusterConnection(redis)) return (redis as unknown as Cluster).options.redisOptions?.connectionName;
  return redis.options.connectionName;
}

/**
 * A second connection to the same target (for SUBSCRIBE, a blocking BLPOP, QueueEvents), named
 * `<name of redis>:<purpose>`. On a Cluster, `duplicate()` takes startup nodes and cluster options
 * rather than connection options, so the overrides go into its `redisOptions` (and `lazyConnect`
 * onto the cluster itself).
 */
export function duplicateRedisConnection(redis: Redis, purpose: string, overrides: RedisOptions = {}): Redis {
  const connectionName = `${connectionNameOf(redis) ?? 'werkpilot'}:${purpose}`;
  if (!isClusterConnection(redis)) return redis.duplicate({ connectionName, ...overrides });
  const cluster = redis as unknown as Cluster;
  const { lazyConnect, ...redisOverrides } = overrides;
  return cluster.duplicate([], {
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    redisOptions: { ...cluster.options.redisOptions, connectionName, ...redisOverrides },
  }) as unknown as Redis;
}

/**
 * An ioredis connection suited to BullMQ: `maxRetriesPerRequest: null` so commands wait through a
 * reconnect instead of failing, and a capped backoff so a Redis restart is picked up within a
 * second or two. The loss is logged once per outage, not once per retry.
 */
export function createRedisConnection(options: RedisConnectionOptions, extra: RedisOptions = {}): Redis {
  const { role, log } = options;
  const target: RedisTarget = 'target' in options ? options.target : { kind: 'single', url: options.url };
  const redis = clientFor(target, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    connectionName: role.replace(/[^A-Za-z0-9:_-]/g, '_'),
    retryStrategy,
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

// The last three are failover noise: a primary demoted to replica unblocks its blocking clients
// (Sentinel failover, CLUSTER FAILOVER), and a cluster slot answers CLUSTERDOWN or, after the retries
// of redis-connection's cluster options, "Too many Cluster redirections" until a replica is elected.
const CONNECTION_ERROR =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|ENOTFOUND|EHOSTUNREACH|Connection is closed|Socket closed|connect ETIMEDOUT|LOADING|UNBLOCKED force unblock|CLUSTERDOWN|Too many Cluster redirections/i;

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
