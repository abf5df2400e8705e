import type { Queue, Worker } from 'bullmq';
import { runJobOptions, triggerRun, type RunJobData } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, noOpFleet, openOrchestratorQueues, startOrchestratorWorker, watchOutcomes } from '../orchestrator.js';
import { openRawQueue, startRawWorker } from '../raw-bullmq.js';
import { countdown, sleep, within } from '../samples.js';
import type { Scenario } from '../scenario.js';
import type { Side } from './throughput.js';

/** Concurrent runs are of different agents (one agent never runs twice at once). */
const { registry, nameOf } = noOpFleet(100);
const jobOptions = runJobOptions(registry.require(nameOf(0)), RETENTION);
/** Commands the measurement itself sends (INFO) are not the runs' cost. */
const OWN_COMMANDS = new Set(['info']);
const SCRIPT_COMMANDS = new Set(['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro']);

/**
 * Redis commands per run, from INFO commandstats before and after `count` runs (enqueue through
 * completion, with a worker at concurrency 10 already waiting). Commands executed inside Lua
 * scripts are counted too, so this is the work Redis does per run, for sizing Redis.
 */
async function commandsPerRun(
  redis: BenchRedis,
  side: Side,
  count: number,
): Promise<{ total: number; scripts: number; cpuMicros: number; byCommand: Record<string, number> }> {
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
  const completions = countdown(count);
  worker.on('completed', completions.tick);
  await sleep(200); // let the idle worker settle into its blocking wait before counting

  const cpuBefore = await redis.cpuSeconds();
  const before = await redis.commandCounts();
  const BATCH = 50;
  for (let i = 0; i < count; i += BATCH) await Promise.all(Array.from({ length: Math.min(BATCH, count - i) }, (_, j) => enqueue(i + j)));
  await within(completions.done, 60_000 + count * 20, `${count} ${side} runs`);
  const after = await redis.commandCounts();
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
  return { total: total / count, scripts: scripts / count, cpuMicros: ((cpuAfter - cpuBefore) * 1e6) / count, byCommand };
}

export const redisCommands: Scenario = {
  name: 'redis-commands',
  title: 'Redis commands and Redis CPU per run (INFO commandstats / cpu deltas, including commands inside Lua), ours vs raw BullMQ',
  async run({ quick, redis, progress }) {
    const count = quick ? 200 : 2000;
    progress(`redis-commands: ${count} runs per side`);
    const raw = await commandsPerRun(redis, 'raw', count);
    const ours = await commandsPerRun(redis, 'ours', count);
    return [
      { metric: 'Redis commands per run', value: ours.total, baseline: raw.total, unit: 'cmds', detail: { ours: ours.byCommand, raw: raw.byCommand } },
      { metric: 'Lua script calls per run', value: ours.scripts, baseline: raw.scripts, unit: 'calls' },
      { metric: 'Redis CPU per run (INFO cpu)', value: ours.cpuMicros, baseline: raw.cpuMicros, unit: 'µs' },
    ] satisfies Measurement[];
  },
};
