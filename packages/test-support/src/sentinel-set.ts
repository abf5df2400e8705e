import { freePort } from '@werkpilot/shared';
import { startRedisServerProcess, type RedisServerProcess } from './redis-server-process.js';
import { waitFor } from './wait-for.js';

/**
 * A Redis Sentinel set on loopback: one primary, one replica and three sentinels (quorum 2), each
 * in a temp directory on a free port. Short timings (down after 1 s) so a killed primary is
 * replaced within seconds; `hz 100` on the data nodes like every Redis this project runs.
 */
export interface SentinelSet {
  /** The name the sentinels monitor the primary under (REDIS_SENTINEL_NAME). */
  readonly name: string;
  /** REDIS_SENTINELS for the processes. */
  readonly sentinelsEnv: string;
  readonly sentinels: RedisServerProcess[];
  /** Both data nodes; which one is the primary changes with every failover. */
  readonly dataNodes: RedisServerProcess[];
  /** The data node the sentinels name as primary now. */
  primary(): Promise<RedisServerProcess>;
  /** Waits until the primary has a replica whose link is up and caught up to its offset. */
  waitForReplicaInSync(timeoutMs?: number): Promise<void>;
  /** Waits until every sentinel knows the replica and the two other sentinels (a failover needs both). */
  waitUntilSettled(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export const SENTINEL_DOWN_AFTER_MS = 1000;

export async function startSentinelSet({ name = 'werkpilot' }: { name?: string } = {}): Promise<SentinelSet> {
  const started: RedisServerProcess[] = [];
  try {
    const primaryPort = await freePort();
    const first = await startRedisServerProcess({ port: primaryPort, config: ['hz 100'] });
    started.push(first);
    const second = await startRedisServerProcess({ port: await freePort(), config: ['hz 100', `replicaof 127.0.0.1 ${primaryPort}`] });
    started.push(second);
    const sentinels: RedisServerProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const sentinel = await startRedisServerProcess({
        binary: 'redis-sentinel',
        port: await freePort(),
        config: [
          `sentinel monitor ${name} 127.0.0.1 ${primaryPort} 2`,
          `sentinel down-after-milliseconds ${name} ${SENTINEL_DOWN_AFTER_MS}`,
          `sentinel failover-timeout ${name} 10000`,
          `sentinel parallel-syncs ${name} 1`,
        ],
      });
      started.push(sentinel);
      sentinels.push(sentinel);
    }
    const dataNodes = [first, second];
    const sentinelClients = sentinels.map((s) => s.client());
    const set: SentinelSet = {
      name,
      sentinelsEnv: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
      sentinels,
      dataNodes,
      async primary() {
        const [, port] = (await sentinelClients[0]!.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as [string, string];
        const node = dataNodes.find((n) => n.port === Number(port));
        if (!node) throw new Error(`the sentinels name an unknown primary on port ${port}`);
        return node;
      },
      async waitForReplicaInSync(timeoutMs = 20_000) {
        await waitFor(
          async () => {
            const primary = await set.primary();
            const info = await primary.client().info('replication');
            const offset = Number(/master_repl_offset:(\d+)/.exec(info)?.[1]);
            const replica = /slave0:.*state=online,offset=(\d+)/.exec(info);
            return replica !== null && Number(replica[1]) >= offset;
          },
          { timeoutMs, intervalMs: 100, what: 'a replica online and in sync with the primary' },
        );
      },
      async waitUntilSettled(timeoutMs = 30_000) {
        await waitFor(
          async () => {
            for (const client of sentinelClients) {
              const replicas = (await client.call('SENTINEL', 'REPLICAS', name)) as string[][];
              const others = (await client.call('SENTINEL', 'SENTINELS', name)) as string[][];
              const flagsOf = (fields: string[]) => fields[fields.indexOf('flags') + 1] ?? '';
              if (replicas.length < 1 || replicas.some((r) => flagsOf(r) !== 'slave')) return false;
              if (others.length < 2) return false;
            }
            return true;
          },
          { timeoutMs, intervalMs: 200, what: 'every sentinel knowing the replica and the other sentinels' },
        );
      },
      async stop() {
        await Promise.all(started.map((s) => s.stop('SIGKILL')));
      },
    };
    return set;
  } catch (err) {
    await Promise.all(started.map((s) => s.stop('SIGKILL')));
    throw err;
  }
}
