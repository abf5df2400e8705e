import { describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { buildRegistry, checkShardLayout, ConfigError, createKeys, createLogger, createShards, shardLayoutKey, type AgentModule } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const run = async () => null;
const agent = (name: string): AgentModule => ({ definition: { run, name }, source: `/agents/${name}.ts` });
const fleet = buildRegistry(['alpha', 'beta', 'gamma', 'delta'].map(agent));

/** The agents queue under `prefix`, as the processes of that layout use it. */
function queueUnder(prefix: string) {
  const queue = new Queue('agents', { connection: redis.client(), prefix: createKeys(prefix).bullPrefix });
  queue.on('error', () => {});
  return queue;
}

describe('changing WERKPILOT_SHARDS', () => {
  it('records the layout, and allows a change once no run waits under a dropped prefix', async () => {
    const prefix = uniquePrefix();
    const client = redis.client();
    const three = createShards(fleet, prefix, 3);
    await checkShardLayout({ redis: client, fleetPrefix: prefix, shards: three, log });
    expect(JSON.parse((await client.get(shardLayoutKey(createKeys(prefix))))!)).toEqual({ count: 3, prefixes: three.all.map((s) => s.prefix) });
    await checkShardLayout({ redis: client, fleetPrefix: prefix, shards: three, log });

    // A cron agent's next tick under the old prefix is no run to wait for: the new layout makes its own.
    const old = queueUnder(three.all[1]!.prefix);
    await old.add('beta', {}, { jobId: 'repeat:beta:1796000000000', delay: 60_000 });
    await checkShardLayout({ redis: client, fleetPrefix: prefix, shards: createShards(fleet, prefix, 1), log });
    expect(await client.exists(shardLayoutKey(createKeys(prefix)))).toBe(0);
    await old.close();
  });

  it('refuses a new layout while runs wait under a prefix it drops, naming the prefixes and the way out', async () => {
    const prefix = uniquePrefix();
    const client = redis.client();
    // One shard so far (no record): a run waiting, a run delayed, and a cron agent's next tick.
    const current = queueUnder(prefix);
    await current.add('alpha', {});
    await current.add('gamma', {}, { delay: 60_000 });
    await current.add('beta', {}, { jobId: 'repeat:beta:1796000000000', delay: 60_000 });
    const three = createShards(fleet, prefix, 3);
    const refusal = checkShardLayout({ redis: client, fleetPrefix: prefix, shards: three, log });
    await expect(refusal).rejects.toBeInstanceOf(ConfigError);
    await expect(refusal).rejects.toThrow(
      `WERKPILOT_SHARDS changed from 1 to 3, but runs still wait under prefixes the new layout does not serve: ${prefix} (2 runs); ` +
        'run the fleet with WERKPILOT_SHARDS=1 until they are done, then change it (docs/operations.md#shards)',
    );
    expect(await client.exists(shardLayoutKey(createKeys(prefix)))).toBe(0);

    // Once they have run (here: removed), the change goes through.
    await current.obliterate({ force: true });
    await checkShardLayout({ redis: client, fleetPrefix: prefix, shards: three, log });
    expect(JSON.parse((await client.get(shardLayoutKey(createKeys(prefix))))!).count).toBe(3);
    await current.close();
  });
});
