import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { closeRedisConnection, createLogger, createRedisConnection, type Redis } from '@werkpilot/shared';
import { findTool, isMissing, startRedisClusterSet, waitFor, type RedisClusterSet } from '@werkpilot/test-support';

/**
 * A cluster connection made while a killed master's slots have no master yet (cluster_state:fail
 * until its replica is elected): what BullMQ's worker does when it resets its blocking connection
 * in the middle of a failover. Its connect() must settle; with ioredis's ready check it never did.
 */
const needed = [findTool('redis-server', { install: 'apt-get install redis-server' }), findTool('redis-cli', { install: 'apt-get install redis-tools' })];
const missing = needed.some((tool) => isMissing(tool));

const log = createLogger({ level: 'silent', name: 'test' });
let cluster: RedisClusterSet | undefined;
const connections: Redis[] = [];
afterAll(async () => {
  for (const c of connections.splice(0)) c.disconnect();
  await cluster?.stop();
}, 60_000);

describe.skipIf(missing)('a Redis Cluster connection while a killed master waits for its replica', () => {
  it('connects at once, and a command for the orphaned slot completes once the replica is elected', async () => {
    cluster = await startRedisClusterSet();
    const key = '{cluster-connection-test}:probe';
    const owner = await cluster.ownerOf(key);
    const witness = cluster.nodes.find((n) => n !== owner.master && n !== owner.replica)!;
    await owner.master.stop('SIGKILL');
    await waitFor(async () => String(await witness.client().cluster('INFO')).includes('cluster_state:fail'), {
      timeoutMs: 10_000,
      intervalMs: 20,
      what: 'the cluster marking the killed master failed',
    });

    const redis = createRedisConnection({ target: { kind: 'cluster', nodes: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })) }, role: 'test', log }, { lazyConnect: true });
    connections.push(redis);
    const connectedAt = Date.now();
    const outcome = await Promise.race([redis.connect().then(() => 'connected'), sleep(10_000).then(() => 'still connecting after 10 s')]);
    expect(outcome).toBe('connected');
    expect(Date.now() - connectedAt).toBeLessThan(5_000);

    // The write waits in the cluster retries until the replica serves the slot.
    await redis.set(key, 'after the failover');
    expect(await redis.get(key)).toBe('after the failover');
    expect((await cluster.ownerOf(key)).master).toBe(owner.replica);
    await closeRedisConnection(redis);
  }, 60_000);
});
