import type { Queue, Worker } from 'bullmq';
import { agentRateKey, createKeys, defineAgent, runJobOptions, triggerRun, type AgentDefinition, type Registry } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, noOpAgent, openOrchestratorQueues, registryOf, startDrainingWorker, startOrchestratorWorker, watchOutcomes } from '../orchestrator.js';
import { countdown, median, preciseNow, sleep, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

/**
 * What the fleet controls cost, measured on our own path with and without them (the baseline is
 * ours without controls, in the same run): throughput of no-op runs at c50 and Redis commands per
 * run for a fleet whose agents have a concurrency key (N = 2 per tenant: the slot set, the costlier
 * form) or a rate limit far above the load, beside the same fleet without; and how soon a run
 * waiting for a slot or for its tokens starts once they are free.
 */

const FLEET_SIZE = 200;
const TENANTS = 1000;
const OWN_COMMANDS = new Set(['info']);

type Variant = 'plain' | 'keyed' | 'rate-limited';

function fleet(variant: Variant): { registry: Registry; nameOf(i: number): string } {
  const names = Array.from({ length: FLEET_SIZE }, (_, i) => `no-op-${String(i).padStart(4, '0')}`);
  const extra: Partial<AgentDefinition> =
    variant === 'keyed'
      ? { concurrency: { limit: 2, key: (data) => (data as { tenant: string }).tenant } }
      : variant === 'rate-limited'
        ? { rateLimit: { max: 1_000_000, perMs: 1000 } }
        : {};
  return { registry: registryOf(names.map((name) => noOpAgent(name, extra))), nameOf: (i) => names[i % FLEET_SIZE]! };
}

const dataOf = (i: number) => ({ tenant: `tenant-${i % TENANTS}` });

async function fill(queue: Queue, registry: Registry, nameOf: (i: number) => string, count: number): Promise<void> {
  const opts = runJobOptions(registry.require(nameOf(0)), RETENTION);
  for (let i = 0; i < count; i += 1000) {
    const n = Math.min(1000, count - i);
    await queue.addBulk(Array.from({ length: n }, (_, j) => ({ name: nameOf(i + j), data: { agent: nameOf(i + j), trigger: 'manual', data: dataOf(i + j) }, opts })));
  }
}

interface Drained {
  perSecond: number;
  /** CPU of this (worker) process and of the Redis server per run, µs: load-independent, unlike runs/s. */
  nodeCpuMicros: number;
  redisCpuMicros: number;
}

/** Runs/s and CPU per run of one worker at concurrency 50 draining `count` queued runs of the variant's fleet. */
async function drain(redis: BenchRedis, variant: Variant, count: number): Promise<Drained> {
  const { registry, nameOf } = fleet(variant);
  const prefix = redis.prefix(`ctl-${variant}`);
  const producer = openOrchestratorQueues(redis.url, prefix);
  const queue = producer.queues.agents as unknown as Queue;
  await queue.pause();
  await fill(queue, registry, nameOf, count);
  const { started, completions: done, outcomes } = await startDrainingWorker({ url: redis.url, prefix, registry, count, what: `${count} ${variant} runs` });
  const redisCpuBefore = await redis.cpuSeconds();
  const cpuBefore = process.cpuUsage();
  const t0 = preciseNow();
  await queue.resume();
  await within(done.done, 120_000 + count * 10, `${count} ${variant} runs`);
  const perSecond = count / ((preciseNow() - t0) / 1000);
  const cpu = process.cpuUsage(cpuBefore);
  const redisCpu = (await redis.cpuSeconds()) - redisCpuBefore;
  await started.close();
  await producer.close();
  outcomes.check();
  return { perSecond, nodeCpuMicros: (cpu.user + cpu.system) / count, redisCpuMicros: (redisCpu * 1e6) / count };
}

/** Redis commands per run (INFO commandstats, commands inside Lua included), after one warm-up run per agent. */
async function commandsPerRun(redis: BenchRedis, variant: Variant, count: number): Promise<{ total: number; byCommand: Record<string, number> }> {
  const { registry, nameOf } = fleet(variant);
  const prefix = redis.prefix(`ctl-cmd-${variant}`);
  const producer = openOrchestratorQueues(redis.url, prefix);
  const started = await startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 10 });
  const worker = started.worker as unknown as Worker;
  const outcomes = watchOutcomes(worker, `${count} ${variant} runs`);
  const enqueue = (i: number) => triggerRun({ queue: producer.queues.agents, registry, retention: RETENTION }, nameOf(i), { data: dataOf(i) });
  const warm = countdown(FLEET_SIZE);
  worker.on('completed', warm.tick);
  await Promise.all(Array.from({ length: FLEET_SIZE }, (_, i) => enqueue(i)));
  await within(warm.done, 60_000, `${variant} warm-up`);
  worker.off('completed', warm.tick);
  const done = countdown(count);
  worker.on('completed', done.tick);
  await sleep(200);
  const before = await redis.commandCounts();
  for (let i = 0; i < count; i += 50) await Promise.all(Array.from({ length: Math.min(50, count - i) }, (_, j) => enqueue(i + j)));
  await within(done.done, 60_000 + count * 20, `${count} ${variant} runs`);
  const after = await redis.commandCounts();
  await started.close();
  await producer.close();
  outcomes.check();
  const byCommand: Record<string, number> = {};
  let total = 0;
  for (const [command, calls] of after) {
    const delta = calls - (before.get(command) ?? 0);
    if (OWN_COMMANDS.has(command) || delta <= 0) continue;
    byCommand[command] = Math.round((delta / count) * 100) / 100;
    total += delta;
  }
  return { total: total / count, byCommand };
}

/**
 * A freed slot → the waiting run's start: an agent with one slot (`queue`) whose runs work 5 ms, so
 * the next one has certainly parked as a waiter; its start is timed from the previous run's return.
 * Two workers, pairs of runs one after another.
 */
async function slotHandOffs(redis: BenchRedis, count: number): Promise<{ samples: number[]; parked: number }> {
  let lastEnd = 0;
  let firstStarted: (() => void) | undefined;
  const samples: number[] = [];
  const registry = registryOf([
    defineAgent({
      name: 'one-at-a-time',
      overlap: 'queue',
      run: async (ctx) => {
        const started = preciseNow();
        if ((ctx.data as { second: boolean }).second) samples.push(started - lastEnd);
        else {
          firstStarted?.();
          await sleep(5);
          lastEnd = preciseNow();
        }
      },
    }),
  ]);
  const prefix = redis.prefix('ctl-slot');
  const producer = openOrchestratorQueues(redis.url, prefix);
  const workers = await Promise.all([0, 1].map(() => startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 5 })));
  let parked = 0;
  const done = new Map<string, () => void>();
  for (const w of workers) {
    w.worker.on('completed', (job) => {
      if ((job.data.data as { second: boolean }).second && job.delay > 0) parked += 1;
      done.get(job.id!)?.();
    });
  }
  const deps = { queue: producer.queues.agents, registry, retention: RETENTION };
  for (let i = 0; i < count; i += 1) {
    // The second run is queued once the first holds the slot, so it parks and is handed the slot.
    const holding = new Promise<void>((resolve) => (firstStarted = resolve));
    await triggerRun(deps, 'one-at-a-time', { data: { second: false } });
    await within(holding, 30_000, `first run of hand-off ${i}`);
    const { runId } = await triggerRun(deps, 'one-at-a-time', { data: { second: true } });
    await within(new Promise<void>((resolve) => done.set(runId, resolve)), 30_000, `hand-off ${i}`);
    done.delete(runId);
  }
  await Promise.all(workers.map((w) => w.close()));
  await producer.close();
  return { samples, parked };
}

/**
 * A token's due time → the waiting run's start: a rate limit of 1 per 20 ms and a burst of runs,
 * so each run after the first waits for its own token; its start is timed (Redis's clock) from the
 * time its token was booked for.
 */
async function tokenWakeUps(redis: BenchRedis, count: number): Promise<{ samples: number[]; waited: number }> {
  const prefix = redis.prefix('ctl-rate');
  const rateKey = agentRateKey(createKeys(prefix), 'paced');
  const probe = redis.client();
  const samples: number[] = [];
  let waited = 0;
  const registry = registryOf([
    defineAgent({
      name: 'paced',
      overlap: 'allowAll',
      rateLimit: { max: 1, perMs: 20 },
      run: async (ctx) => {
        // Redis's clock and this process's are the machine's: the start is taken here, not after a trip to Redis.
        const startedAt = preciseNow();
        const granted = Number(await probe.zscore(rateKey, `${ctx.runId}:0#1`));
        if ((ctx.data as { i: number }).i > 0) samples.push(startedAt - granted);
      },
    }),
  ]);
  const producer = openOrchestratorQueues(redis.url, prefix);
  const workers = await Promise.all([0, 1].map(() => startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 10 })));
  const done = countdown(count);
  for (const w of workers) {
    w.worker.on('completed', (job) => {
      if (job.delay > 0) waited += 1;
      done.tick();
    });
  }
  const deps = { queue: producer.queues.agents, registry, retention: RETENTION };
  for (let i = 0; i < count; i += 1) await triggerRun(deps, 'paced', { data: { i } });
  await within(done.done, 30_000 + count * 40, `${count} paced runs`);
  await Promise.all(workers.map((w) => w.close()));
  await producer.close();
  return { samples, waited };
}

export const controls: Scenario = {
  name: 'controls',
  title:
    'fleet controls: runs/s and Redis commands per run with a concurrency key or a rate limit far above the load beside the same fleet without; freed slot / due token → waiting run start',
  async run({ quick, redis, progress }) {
    const count = quick ? 1000 : 10_000;
    const rounds = quick ? 1 : 3;
    const variants: Variant[] = ['plain', 'keyed', 'rate-limited'];
    for (const v of variants) await drain(redis, v, quick ? 200 : 1000); // warm-up
    const drained: Record<Variant, Drained[]> = { plain: [], keyed: [], 'rate-limited': [] };
    for (let round = 0; round < rounds; round += 1) {
      progress(`controls: throughput round ${round + 1}/${rounds}, ${count} runs per variant at c50`);
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) drained[v].push(await drain(redis, v, count));
    }
    const commandsCount = quick ? 200 : 2000;
    progress(`controls: Redis commands per run, ${commandsCount} runs per variant`);
    const commands = {
      plain: await commandsPerRun(redis, 'plain', commandsCount),
      keyed: await commandsPerRun(redis, 'keyed', commandsCount),
      'rate-limited': await commandsPerRun(redis, 'rate-limited', commandsCount),
    };
    const waits = quick ? 30 : 500;
    progress(`controls: ${waits} slot hand-offs and token wake-ups`);
    const slots = await slotHandOffs(redis, waits);
    const tokens = await tokenWakeUps(redis, waits);
    const med = (v: Variant, f: keyof Drained) => median(drained[v].map((d) => d[f]));
    const plain = med('plain', 'perSecond');
    const s = summarise(slots.samples);
    const t = summarise(tokens.samples);
    return [
      { metric: 'runs/s at c50 with a concurrency key (2 per tenant)', value: med('keyed', 'perSecond'), baseline: plain, unit: 'runs/s', target: { on: 'ratio', min: 0.9 } },
      { metric: 'runs/s at c50 with a rate limit far above the load', value: med('rate-limited', 'perSecond'), baseline: plain, unit: 'runs/s', target: { on: 'ratio', min: 0.9 } },
      // Node and Redis share the cores: CPU per run bounds the ratios above, and does not move with the machine's load.
      { metric: 'worker CPU per run with a concurrency key', value: med('keyed', 'nodeCpuMicros'), baseline: med('plain', 'nodeCpuMicros'), unit: 'µs' },
      { metric: 'Redis CPU per run with a concurrency key', value: med('keyed', 'redisCpuMicros'), baseline: med('plain', 'redisCpuMicros'), unit: 'µs' },
      { metric: 'worker CPU per run with a rate limit', value: med('rate-limited', 'nodeCpuMicros'), baseline: med('plain', 'nodeCpuMicros'), unit: 'µs' },
      { metric: 'Redis CPU per run with a rate limit', value: med('rate-limited', 'redisCpuMicros'), baseline: med('plain', 'redisCpuMicros'), unit: 'µs' },
      {
        metric: 'Redis commands per run with a concurrency key',
        value: commands.keyed.total,
        baseline: commands.plain.total,
        unit: 'cmds',
        detail: { keyed: commands.keyed.byCommand, plain: commands.plain.byCommand },
      },
      {
        metric: 'Redis commands per run with a rate limit',
        value: commands['rate-limited'].total,
        baseline: commands.plain.total,
        unit: 'cmds',
        detail: { rateLimited: commands['rate-limited'].byCommand },
      },
      { metric: `freed slot → waiting run start p50 (${s.count})`, value: s.p50, baseline: null, unit: 'ms' },
      { metric: `freed slot → waiting run start p99 (${s.count})`, value: s.p99, baseline: null, unit: 'ms', target: { on: 'value', max: 5 }, detail: { parkedAndHandedOn: slots.parked } },
      { metric: `token due → waiting run start p50 (${t.count})`, value: t.p50, baseline: null, unit: 'ms' },
      { metric: `token due → waiting run start p99 (${t.count})`, value: t.p99, baseline: null, unit: 'ms', target: { on: 'value', max: 5 }, detail: { waitedForTokens: tokens.waited } },
    ] satisfies Measurement[];
  },
};
