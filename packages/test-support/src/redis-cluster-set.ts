import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { freePort } from '@werkpilot/shared';
import { startRedisServerProcess, type RedisServerProcess } from './redis-server-process.js';
import { waitFor } from './wait-for.js';

const run = promisify(execFile);

// A node killed by a signal keeps `exitCode` null (its `signalCode` says how it ended).
const isRunning = (node: RedisServerProcess) => node.proc.exitCode === null && node.proc.signalCode === null;

/**
 * A Redis Cluster on loopback: three masters and one replica each (`redis-cli --cluster create`),
 * every node in a temp directory on a free port. A short node timeout, so a failover settles in
 * seconds; `hz 100` like every Redis this project runs. Ready once every replica has synced.
 */
export interface RedisClusterSet {
  readonly nodes: RedisServerProcess[];
  /** REDIS_CLUSTER_NODES for the processes (every node; any one would do). */
  readonly nodesEnv: string;
  /** The master serving `key`'s slot now, and its replica. */
  ownerOf(key: string): Promise<{ master: RedisServerProcess; replica: RedisServerProcess | undefined }>;
  /** Waits until every node reports cluster_state:ok. */
  waitUntilOk(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

interface NodeLine {
  port: number;
  id: string;
  isMaster: boolean;
  masterId: string;
  slots: [number, number][];
}

function parseClusterNodes(text: string): NodeLine[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, addr, flags, masterId, , , , , ...slots] = line.split(' ');
      return {
        id: id!,
        port: Number(addr!.split('@')[0]!.split(':')[1]),
        isMaster: flags!.split(',').includes('master'),
        masterId: masterId!,
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [from, to] = s.split('-');
            return [Number(from), Number(to ?? from)] as [number, number];
          }),
      };
    });
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A free port for a cluster node whose bus port (always port + 10000 unless `cluster-port` is set,
 * which Redis < 7 lacks) is valid and free too: a node on a port above 55535 exits with "Redis port
 * number too high". Linux's default bind(0) ports stay below that; macOS's (49152–65535) mostly do not.
 */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await freePort();
    if (port + 10000 > 65535 || taken.has(port) || taken.has(port + 10000) || !(await isPortFree(port + 10000))) continue;
    taken.add(port);
    taken.add(port + 10000);
    return port;
  }
  throw new Error('found no free port at or below 55535 whose cluster bus port (port + 10000) was free too, in 100 tries');
}

export async function startRedisClusterSet({ masters = 3, replicasPerMaster = 1 } = {}): Promise<RedisClusterSet> {
  const nodes: RedisServerProcess[] = [];
  const taken = new Set<number>();
  try {
    for (let i = 0; i < masters * (1 + replicasPerMaster); i++) {
      nodes.push(
        await startRedisServerProcess({
          port: await freeClusterPort(taken),
          config: [
            'hz 100',
            'cluster-enabled yes',
            'cluster-config-file nodes.conf',
            'cluster-node-timeout 2000',
            // Redis 7 waits 5 s before a diskless full sync, to batch replicas; a replica that has
            // not synced yet has no data and refuses to be elected when its master dies ("Disconnected
            // from master for longer than allowed"), which is right, but not what these tests are about.
            'repl-diskless-sync-delay 0',
          ],
        }),
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], {
      timeout: 60_000,
    });
    const set: RedisClusterSet = {
      nodes,
      nodesEnv: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
      async ownerOf(key) {
        const live = nodes.filter(isRunning);
        const slot = Number(await live[0]!.client().cluster('KEYSLOT', key));
        const lines = parseClusterNodes(String(await live[0]!.client().cluster('NODES')));
        const masterLine = lines.find((l) => l.isMaster && l.slots.some(([from, to]) => slot >= from && slot <= to));
        if (!masterLine) throw new Error(`no master serves slot ${slot}`);
        const replicaLine = lines.find((l) => !l.isMaster && l.masterId === masterLine.id);
        return { master: nodes.find((n) => n.port === masterLine.port)!, replica: nodes.find((n) => n.port === replicaLine?.port) };
      },
      async waitUntilOk(timeoutMs = 30_000) {
        await waitFor(
          async () => {
            for (const node of nodes.filter(isRunning)) {
              if (!String(await node.client().cluster('INFO')).includes('cluster_state:ok')) return false;
            }
            return true;
          },
          { timeoutMs, intervalMs: 100, what: 'cluster_state:ok on every node' },
        );
      },
      async stop() {
        await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
      },
    };
    await set.waitUntilOk();
    await waitFor(
      async () => {
        for (const node of nodes) {
          const replication = String(await node.client().info('replication'));
          if (replication.includes('role:slave') && !replication.includes('master_link_status:up')) return false;
          // ownerOf() asks one node; each must know every replica's master already (gossip lags).
          const known = parseClusterNodes(String(await node.client().cluster('NODES')));
          if (known.filter((l) => !l.isMaster && l.masterId !== '-').length < masters * replicasPerMaster) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: 'every replica synced with its master, and known as its replica to every node' },
    );
    return set;
  } catch (err) {
    await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
    throw err;
  }
}
