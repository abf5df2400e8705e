import type { Socket } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import type { Cluster } from 'ioredis';
import { closeRedisConnection, createLogger, createRedisConnection, type Redis } from '@werkpilot/shared';
import { findTool, isMissing, startRedisClusterSet, uniquePrefix, useTestRedis, type RedisClusterSet } from '@werkpilot/test-support';
import { createWriteBatcher } from '../src/redis/write-batching.js';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'write-batching-test' });
const needed = [findTool('redis-server', { install: 'apt-get install redis-server' }), findTool('redis-cli', { install: 'apt-get install redis-tools' })];
const clusterMissing = needed.some((tool) => isMissing(tool));

let cluster: RedisClusterSet | undefined;
const connections: Redis[] = [];
afterAll(async () => {
  await Promise.all(connections.map(closeRedisConnection));
  await cluster?.stop();
}, 30_000);

/** Counts the writes that reach these sockets (a corked socket hands its buffered chunks over in one `_writev`). */
function countSocketWrites(sockets: Socket[]): () => number {
  let writes = 0;
  for (const socket of sockets) {
    const instrumented = socket as unknown as { _write: (...args: unknown[]) => void; _writev?: (...args: unknown[]) => void };
    const write = instrumented._write.bind(socket);
    instrumented._write = (...args) => {
      writes += 1;
      write(...args);
    };
    const writev = instrumented._writev?.bind(socket);
    if (writev) {
      instrumented._writev = (...args) => {
        writes += 1;
        writev(...args);
      };
    }
  }
  return () => writes;
}

/** Three commands sent in one turn of the event loop, with the connection's writes held first or not. */
async function sendThreeCommands(connection: Redis, sockets: Socket[], isHeld: boolean): Promise<number> {
  const holdWrites = createWriteBatcher(connection);
  const writes = countSocketWrites(sockets);
  const tag = `{${uniquePrefix()}}`;
  if (isHeld) holdWrites();
  const replies = await Promise.all([connection.set(`${tag}:a`, '1'), connection.set(`${tag}:b`, '2'), connection.mget(`${tag}:a`, `${tag}:b`)]);
  expect(replies).toEqual(['OK', 'OK', ['1', '2']]);
  return writes();
}

describe('createWriteBatcher', () => {
  it('sends the commands of one turn in one socket write on a single Redis', async () => {
    const connection = createRedisConnection({ url: redis.url, role: 'test', log });
    connections.push(connection);
    await connection.ping();
    expect(await sendThreeCommands(connection, [connection.stream as Socket], true)).toBe(1);
    // What it saves: unheld, the commands leave in writes of their own.
    expect(await sendThreeCommands(connection, [connection.stream as Socket], false)).toBeGreaterThan(1);
  });

  it.skipIf(clusterMissing)('sends the commands of one turn in one socket write on a Redis Cluster, to the master serving their slot', async () => {
    cluster = await startRedisClusterSet({ masters: 3, replicasPerMaster: 0 });
    const connection = createRedisConnection({ target: { kind: 'cluster', nodes: cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })) }, role: 'test', log });
    connections.push(connection);
    // A cluster connects to a node when it first sends it something: every master gets a PING.
    const masters = () => (connection as unknown as Cluster).nodes('master');
    await connection.ping();
    await Promise.all(masters().map((node) => node.ping()));
    const masterSockets = () => masters().map((node) => node.stream as Socket);
    expect(masterSockets()).toHaveLength(3);
    expect(await sendThreeCommands(connection, masterSockets(), true)).toBe(1);
    expect(await sendThreeCommands(connection, masterSockets(), false)).toBeGreaterThan(1);
  });
});
