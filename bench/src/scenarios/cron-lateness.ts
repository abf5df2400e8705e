import type { Job } from 'bullmq';
import { defineAgent, reconcileJobSchedulers, runJobOptions } from '@werkpilot/shared';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, registryOf, silentLogger, startOrchestratorWorker } from '../orchestrator.js';
import { openRawQueue, startRawWorker } from '../raw-bullmq.js';
import { countdown, preciseNow, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

const AGENT = 'every-second';
const EVERY_SECOND = '* * * * * *';
/** The first ticks after a scheduler is created include its catch-up run; they are not timed. */
const SKIPPED_TICKS = 2;

/** A job scheduler's run ids are `repeat:<schedulerId>:<tickMillis>` (docs/design.md#bullmq-facts-relied-on). */
export function tickOf(jobId: string): number {
  const tick = Number(jobId.slice(jobId.lastIndexOf(':') + 1));
  if (!Number.isFinite(tick)) throw new Error(`job ${jobId} is not a job-scheduler run`);
  return tick;
}

/**
 * Start time minus tick time of an every-second agent (reconciled by the scheduler's code, run by
 * the full worker path) beside a raw BullMQ job scheduler, running at the same time on the same
 * Redis. Lateness is bounded by Redis's `hz` (the bench's Redis runs with 100).
 */
export const cronLateness: Scenario = {
  name: 'cron-lateness',
  title: 'every-second schedule: run start − tick time, ours (reconciled scheduler + worker) beside a raw job scheduler',
  async run({ quick, redis, progress }) {
    const ticks = quick ? 3 : 60;
    const oursSamples: number[] = [];
    const rawSamples: number[] = [];
    const oursDone = countdown(ticks + SKIPPED_TICKS);
    const rawDone = countdown(ticks + SKIPPED_TICKS);

    const registry = registryOf([
      defineAgent({
        name: AGENT,
        schedule: { cron: EVERY_SECOND },
        run: async (ctx) => {
          oursSamples.push(preciseNow() - tickOf(ctx.runId));
          oursDone.tick();
        },
      }),
    ]);
    const jobOptions = runJobOptions(registry.require(AGENT), RETENTION);

    const oursPrefix = redis.prefix('cron-ours');
    const ours = openOrchestratorQueues(redis.url, oursPrefix);
    const oursWorker = await startOrchestratorWorker({ url: redis.url, prefix: oursPrefix, registry, concurrency: 10 });

    const rawPrefixName = redis.prefix('cron-raw');
    const rawQueue = openRawQueue(redis.client(), rawPrefixName);
    const rawWorker = await startRawWorker(redis.client(), rawPrefixName, 10, async (job: Job) => {
      rawSamples.push(preciseNow() - tickOf(job.id!));
      rawDone.tick();
    });

    progress(`cron-lateness: ${ticks} ticks of an every-second schedule, ours and raw side by side`);
    await reconcileJobSchedulers({ queue: ours.queues.agents, registry, retention: RETENTION, log: silentLogger('scheduler') });
    await rawQueue.upsertJobScheduler(AGENT, { pattern: EVERY_SECOND }, { name: AGENT, data: { agent: AGENT, trigger: 'cron' }, opts: jobOptions });
    const limit = (ticks + SKIPPED_TICKS + 30) * 1000;
    await within(Promise.all([oursDone.done, rawDone.done]), limit, `${ticks} cron ticks`);

    await Promise.all([ours.queues.agents.removeJobScheduler(AGENT), rawQueue.removeJobScheduler(AGENT)]);
    await Promise.all([oursWorker.close(), rawWorker.close()]);
    await Promise.all([ours.close(), rawQueue.close()]);

    const o = summarise(oursSamples.slice(SKIPPED_TICKS, SKIPPED_TICKS + ticks));
    const r = summarise(rawSamples.slice(SKIPPED_TICKS, SKIPPED_TICKS + ticks));
    return [
      { metric: `start − tick p50 (${o.count} ticks)`, value: o.p50, baseline: r.p50, unit: 'ms' },
      { metric: `start − tick p99 (${o.count} ticks)`, value: o.p99, baseline: r.p99, unit: 'ms', target: { on: 'value', max: 25 } },
    ] satisfies Measurement[];
  },
};
