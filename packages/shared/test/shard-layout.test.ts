import { describe, expect, it } from 'vitest';
import { buildRegistry, checkShardLayout, createKeys, createLogger, createQueues, createShards, leaderKey, shardLayoutKey, ShardLayoutError, type AgentModule } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const run = async () => null;
const agent = (name: string, extra: Record<string, unknown> = {}): AgentModule => ({ definition: { run, name, ...extra }, source: `/agents/${name}.ts` });
const fleet = buildRegistry(['alpha', 'beta', 'gamma', 'delta'].map((name) => agent(name)));

/** The agents queue under `prefix`, as a process of that layout adds to it. */
const queuesUnder = (prefix: string) => createQueues({ connection: redis.client(), keys: createKeys(prefix) });
const check = (prefix: string, shards: ReturnType<typeof createShards>, record = true) => checkShardLayout({ redis: redis.client(), fleetPrefix: prefix, shards, log, record });
const recordOf = async (prefix: string) => JSON.parse((await redis.client().get(shardLayoutKey(createKeys(prefix)))) ?? 'null');

describe('changing the shard layout', () => {
  it('records K, the prefixes and every agent’s prefix once nothing waits; one shard keeps no record', async () => {
    const prefix = uniquePrefix();
    await check(prefix, createShards(fleet, prefix, 1));
    expect(await recordOf(prefix)).toBe(null);
    const three = createShards(fleet, prefix, 3);
    await check(prefix, three, false);
    expect(await recordOf(prefix)).toBe(null);
    await check(prefix, three);
    expect(await recordOf(prefix)).toEqual({
      count: 3,
      prefixes: three.all.map((shard) => shard.prefix),
      placement: Object.fromEntries(fleet.names().map((name) => [name, three.of(name)!.prefix])),
    });
    await check(prefix, createShards(fleet, prefix, 1));
    expect(await recordOf(prefix)).toBe(null);
  });

  it('refuses while runs of moving agents wait under their old prefix — parked and delayed ones too, not a job scheduler’s next tick', async () => {
    const prefix = uniquePrefix();
    const old = queuesUnder(prefix);
    await old.agents.add('alpha', { agent: 'alpha', trigger: 'manual' });
    await old.agents.add('beta', { agent: 'beta', trigger: 'cron' }, { jobId: 'repeat:beta:1796000000000', delay: 60_000 });
    await old.agents.upsertJobScheduler('gamma', { pattern: '0 * * * *' }, { name: 'gamma', data: { agent: 'gamma', trigger: 'cron' } });
    const three = createShards(fleet, prefix, 3);
    const refusal = check(prefix, three);
    await expect(refusal).rejects.toBeInstanceOf(ShardLayoutError);
    await expect(refusal).rejects.toThrow(
      `the shard layout changes (WERKPILOT_SHARDS 1 → 3, or pins or dependencies), but ${prefix} holds 2 runs of alpha, beta, which move elsewhere: ` +
        'run the old layout until those runs are done and its schedulers are stopped, then start this one (docs/operations.md#shards)',
    );
    expect(await recordOf(prefix)).toBe(null);

    await old.agents.remove('repeat:beta:1796000000000');
    await old.agents.drain();
    await check(prefix, three);
    expect((await recordOf(prefix)).count).toBe(3);
    await old.close();
  });

  it('catches an agent moved by a pin within the same K, and a dropped prefix whose scheduler still leads', async () => {
    const prefix = uniquePrefix();
    const three = createShards(fleet, prefix, 3);
    await check(prefix, three);
    const from = three.of('alpha')!;
    const pinned = buildRegistry(['alpha', 'beta', 'gamma', 'delta'].map((name) => agent(name, name === 'alpha' ? { shard: (from.index + 1) % 3 } : {})));
    const queues = queuesUnder(from.prefix);
    await queues.agents.add('alpha', { agent: 'alpha', trigger: 'manual' });
    await expect(check(prefix, createShards(pinned, prefix, 3))).rejects.toThrow(`but ${from.prefix} holds 1 run of alpha, which moves elsewhere:`);
    await queues.agents.drain();
    await check(prefix, createShards(pinned, prefix, 3));
    await queues.close();

    const two = createShards(fleet, prefix, 2);
    const dropped = three.all.map((s) => s.prefix).filter((p) => !two.all.some((s) => s.prefix === p));
    expect(dropped.length).toBeGreaterThan(0);
    await redis.client().set(leaderKey(createKeys(dropped[0]!)), 'old-scheduler', 'PX', 10_000);
    await expect(check(prefix, two)).rejects.toThrow(`${dropped[0]} still has a leading scheduler (one of the old layout is running)`);
  });

  it('lets the leaders of every shard record the same new layout at once', async () => {
    const prefix = uniquePrefix();
    const three = createShards(fleet, prefix, 3);
    await Promise.all([check(prefix, three), check(prefix, three), check(prefix, three)]);
    expect((await recordOf(prefix)).count).toBe(3);
  });

  it('names a record it cannot read instead of guessing', async () => {
    const prefix = uniquePrefix();
    const key = shardLayoutKey(createKeys(prefix));
    await redis.client().set(key, 'not json');
    await expect(check(prefix, createShards(fleet, prefix, 3))).rejects.toThrow(
      `the shard layout record ${key} is not one this version wrote: check it (redis-cli GET '${key}') and delete it if no run waits under its prefixes`,
    );
  });
});
