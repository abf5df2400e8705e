import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRedisConnection, type Redis, type RedisTarget } from '@werkpilot/shared';
import { startRedisClusterSet } from '@werkpilot/test-support/redis-cluster-set';
import { findTool } from '@werkpilot/test-support/tools';
import { readCpuSeconds } from './bench-redis.js';
import { silentLogger } from './orchestrator.js';
import { ScenarioSkippedError } from './scenario.js';

/** A local Redis Cluster of masters only, started for one scenario, and the clients it opened. */
export interface BenchCluster {
  /** REDIS_CLUSTER_NODES as a target: every master. */
  readonly target: RedisTarget;
  readonly masters: readonly ClusterMaster[];
  /** A fresh key prefix (used as a hash tag, so all of one prefix's keys share a slot). */
  prefix(label: string): string;
  /** A new cluster connection with BullMQ's required options; closed by `close()`. */
  client(): Redis;
  /** CPU seconds each master has used so far (INFO cpu, user + system), in the order of `masters`. */
  cpuSecondsByServer(): Promise<number[]>;
  close(): Promise<void>;
}

export interface ClusterMaster {
  port: number;
  /** Its slot ranges, `0-5460`. */
  slots: string;
}

/** `redis-cli --cluster create` arrived in Redis 5; cluster mode itself in 3. */
const MINIMUM_MAJOR = 5;

/**
 * Starts `masters` cluster nodes on loopback (no replicas: the bench measures load, not failover),
 * with `hz 100` like every Redis this project runs. Throws ScenarioSkippedError, saying why, when
 * this machine's redis-server or redis-cli cannot build a cluster or the nodes cannot start.
 */
export async function openBenchCluster({ masters }: { masters: number }): Promise<BenchCluster> {
  for (const tool of [findTool('redis-server', { install: 'apt-get install redis-server' }), findTool('redis-cli', { install: 'apt-get install redis-tools' })]) {
    if (tool.missing) throw new ScenarioSkippedError(tool.missing);
    const version = spawnSync(tool.path!, ['--version'], { encoding: 'utf8' }).stdout ?? '';
    const major = Number(/(?:v=|redis-cli )(\d+)\./.exec(version)?.[1] ?? NaN);
    if (!(major >= MINIMUM_MAJOR)) throw new ScenarioSkippedError(`${tool.name} "${version.trim()}" cannot build a cluster (needs Redis ${MINIMUM_MAJOR} or later)`);
  }
  const set = await startRedisClusterSet({ masters, replicasPerMaster: 0 }).catch((err: Error) => {
    throw new ScenarioSkippedError(`a local ${masters}-master Redis Cluster did not start: ${err.message.split('\n')[0]}`);
  });
  const slotsByPort = await masterSlots(set.nodes[0]!.client());
  const log = silentLogger('bench-cluster');
  const target: RedisTarget = { kind: 'cluster', nodes: set.nodes.map((n) => ({ host: '127.0.0.1', port: n.port })) };
  const clients: Redis[] = [];
  return {
    target,
    masters: set.nodes.map((n) => ({ port: n.port, slots: slotsByPort.get(n.port) ?? '' })),
    prefix: (label) => `bench-${label}-${randomBytes(3).toString('hex')}`,
    client: () => {
      const client = createRedisConnection({ target, role: 'bench', log });
      clients.push(client);
      return client;
    },
    cpuSecondsByServer: () => Promise.all(set.nodes.map((n) => readCpuSeconds(n.client()))),
    close: async () => {
      await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
      await set.stop();
    },
  };
}

/** Port → its slot ranges, from CLUSTER SLOTS (`[[from, to, [host, port, id], ...replicas], ...]`). */
async function masterSlots(node: Redis): Promise<Map<number, string>> {
  const ranges = await node.cluster('SLOTS');
  const byPort = new Map<number, string[]>();
  for (const [from, to, master] of ranges.sort((a, b) => a[0] - b[0])) {
    const port = master![1];
    byPort.set(port, [...(byPort.get(port) ?? []), `${from}-${to}`]);
  }
  return new Map([...byPort].map(([port, list]) => [port, list.join(',')]));
}
