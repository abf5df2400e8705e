import type { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { runJobOptions, triggerRun, type RunJobData } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, noOpFleet, openOrchestratorQueues, startOrchestratorWorker, watchOutcomes } from '../orchestrator.js';
import { addMany, openRawQueue, startRawWorker } from '../raw-bullmq.js';
import { countRoundTrips } from '../round-trips.js';
import { countdown, sleep, within } from '../samples.js';
import type { Scenario } from '../scenario.js';
import type { Side } from './throughput.js';

/** Concurrent runs are of different agents (one agent never runs twice at once). */
const FLEET_SIZE = 100;
const { registry, nameOf } = noOpFleet(FLEET_SIZE);
const jobOptions = runJobOptions(registry.require(nameOf(0)), RETENTION);
/** Commands the measurement itself sends (INFO) are not the runs' cost. */
const OWN_COMMANDS = new Set(['info']);
const SCRIPT_COMMANDS = new Set(['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro']);

/**
 * Redis commands per run, from INFO commandstats before and after `count` runs (enqueue through
 * completion, with a worker at concurrency 10 already waiting, after one warm-up run per agent so
 * per-agent caches are filled as in a long-running worker). Commands executed inside Lua scripts
 * are counted too, so this is the work Redis does per run, for sizing Redis.
 */
async function commandsPerRun(
  redis: BenchRedis,
  side: Side,
  count: number,
): Promise<{ total: number; scripts: number; cpuMicros: number; scriptMicros: number; byCommand: Record<string, number> }> {
  const prefix = redis.prefix(`cmd-${side}`);
  let enqueue: (i: number) => Promise<unknown>;
  let outcomes: { check(): void } | undefined;
  let worker: Worker;
  let close: () => Promise<void>;
  if (side === 'ours') {
    const opened = openOrchestratorQueues(redis.url, prefix);
    const started = await startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 10 });
    worker = started.worker as unknown as Worker;
    outcomes = watchOutcomes(worker, `${count} runs`);
    enqueue = (i) => triggerRun({ queue: opened.queues.agents, registry, retention: RETENTION }, nameOf(i));
    close = async () => {
      await started.close();
      await opened.close();
    };
  } else {
    const queue: Queue = openRawQueue(redis.client(), prefix);
    worker = await startRawWorker(redis.client(), prefix, 10);
    enqueue = (i) => queue.add(nameOf(i), { agent: nameOf(i), trigger: 'manual' } satisfies RunJobData, jobOptions);
    close = async () => {
      await worker.close();
      await queue.close();
    };
  }
  const warmUp = countdown(FLEET_SIZE);
  worker.on('completed', warmUp.tick);
  await Promise.all(Array.from({ length: FLEET_SIZE }, (_, i) => enqueue(i)));
  await within(warmUp.done, 60_000, `${side} warm-up runs`);
  worker.off('completed', warmUp.tick);
  const completions = countdown(count);
  worker.on('completed', completions.tick);
  await sleep(200); // let the idle worker settle into its blocking wait before counting

  const cpuBefore = await redis.cpuSeconds();
  const before = await redis.commandCounts();
  const microsBefore = await redis.commandMicros();
  const BATCH = 50;
  for (let i = 0; i < count; i += BATCH) await Promise.all(Array.from({ length: Math.min(BATCH, count - i) }, (_, j) => enqueue(i + j)));
  await within(completions.done, 60_000 + count * 20, `${count} ${side} runs`);
  const after = await redis.commandCounts();
  const microsAfter = await redis.commandMicros();
  const cpuAfter = await redis.cpuSeconds();
  await close();
  outcomes?.check();

  const byCommand: Record<string, number> = {};
  let total = 0;
  let scripts = 0;
  for (const [command, calls] of after) {
    if (OWN_COMMANDS.has(command)) continue;
    const delta = calls - (before.get(command) ?? 0);
    if (delta <= 0) continue;
    byCommand[command] = Math.round((delta / count) * 100) / 100;
    total += delta;
    if (SCRIPT_COMMANDS.has(command)) scripts += delta;
  }
  let scriptMicros = 0;
  for (const command of SCRIPT_COMMANDS) scriptMicros += (microsAfter.get(command) ?? 0) - (microsBefore.get(command) ?? 0);
  return { total: total / count, scripts: scripts / count, cpuMicros: ((cpuAfter - cpuBefore) * 1e6) / count, scriptMicros: scriptMicros / count, byCommand };
}

/**
 * Redis round trips per run of one worker at concurrency 1 draining a queue filled beforehand, over
 * the second half of `2 × count` runs (the first half fills per-agent caches). Counted on the
 * worker's command connections (countRoundTrips); BullMQ's blocking connection is not among them.
 */
async function roundTripsPerRun(redis: BenchRedis, side: Side, count: number): Promise<number> {
  const prefix = redis.prefix(`rtt-${side}`);
  let queue: Queue;
  let worker: Worker;
  let close: () => Promise<void>;
  let connections: Redis[];
  if (side === 'ours') {
    const opened = openOrchestratorQueues(redis.url, prefix);
    queue = opened.queues.agents as unknown as Queue;
    await queue.pause();
    const started = await startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 1 });
    worker = started.worker as unknown as Worker;
    connections = started.connections;
    close = async () => {
      await started.close();
      await opened.close();
    };
  } else {
    queue = openRawQueue(redis.client(), prefix);
    await queue.pause();
    const connection = redis.client();
    worker = await startRawWorker(connection, prefix, 1);
    connections = [connection];
    close = async () => {
      await worker.close();
      await queue.close();
    };
  }
  await addMany(queue, nameOf, jobOptions, 2 * count);
  const counter = countRoundTrips(connections);
  const firstHalf = countdown(count);
  const all = countdown(2 * count);
  worker.on('completed', () => {
    firstHalf.tick();
    all.tick();
  });
  let counted = 0;
  void firstHalf.done.then(() => {
    counted = counter.count;
  });
  await queue.resume();
  await within(all.done, 60_000 + count * 40, `${2 * count} ${side} runs at concurrency 1`);
  const perRun = (counter.count - counted) / count;
  await close();
  return perRun;
}

export const redisCommands: Scenario = {
  name: 'redis-commands',
  title: 'Redis commands and Redis CPU per run (INFO commandstats / cpu deltas, including commands inside Lua), ours vs raw BullMQ',
  async run({ quick, redis, progress }) {
    const count = quick ? 200 : 2000;
    progress(`redis-commands: ${count} runs per side`);
    const raw = await commandsPerRun(redis, 'raw', count);
    const ours = await commandsPerRun(redis, 'ours', count);
    progress(`redis-commands: round trips, ${2 * count} runs per side at concurrency 1`);
    const rawTrips = await roundTripsPerRun(redis, 'raw', count);
    const ourTrips = await roundTripsPerRun(redis, 'ours', count);
    return [
      { metric: 'Redis commands per run', value: ours.total, baseline: raw.total, unit: 'cmds', target: { on: 'value', max: 50 }, detail: { ours: ours.byCommand, raw: raw.byCommand } },
      // The agent page's per-minute rollups (run-rollups.ts): one HINCRBY inside the completion script. BullMQ's own
      // scripts send HINCRBYs too (the raw side's count); a no-op fleet's successful runs send no other HINCRBY of ours
      // (counters go through one HMGET/HSET), so the difference is the rollups' whole cost.
      {
        metric: 'Redis commands per run for the per-minute rollups',
        value: (ours.byCommand.hincrby ?? 0) - (raw.byCommand.hincrby ?? 0),
        baseline: null,
        unit: 'cmds',
        target: { on: 'value', max: 1 },
      },
      { metric: 'Lua script calls per run', value: ours.scripts, baseline: raw.scripts, unit: 'calls', target: { on: 'value', max: 4 } },
      { metric: 'Redis CPU per run (INFO cpu)', value: ours.cpuMicros, baseline: raw.cpuMicros, unit: 'µs', target: { on: 'ratio', max: 1.3 } },
      // Time inside Lua scripts (INFO commandstats usec, the commands they call included): BullMQ's on both sides, plus our two.
      { metric: 'Redis time in Lua scripts per run', value: ours.scriptMicros, baseline: raw.scriptMicros, unit: 'µs' },
      {
        metric: 'Redis round trips per run at c1 (worker side)',
        value: ourTrips,
        baseline: rawTrips,
        unit: 'trips',
        detail: { oursBeyondBullMQ: Math.round((ourTrips - rawTrips) * 100) / 100 },
      },
      { metric: "Redis round trips per run of ours beyond BullMQ's", value: ourTrips - rawTrips, baseline: null, unit: 'trips', target: { on: 'value', max: 1 } },
    ] satisfies Measurement[];
  },
};
