import type { Job, Worker } from 'bullmq';
import { defineAgent, runJobOptions, startPipeline } from '@werkpilot/shared';
import { completionWaiter } from '../completion-waiter.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, registryOf, startOrchestratorWorker } from '../orchestrator.js';
import { preciseNow, sleep, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';
import { rawFlowPromotions } from './raw-flow-promotion.js';

const WORKERS = 2;
const CONCURRENCY = 10;
/**
 * The dependency works this long, so its dependent has certainly been fetched and parked (not
 * merely started later) by the time it finishes: what is timed is the promotion.
 */
const DEPENDENCY_WORK_MS = 5;

/**
 * Completion of a dependency run → start of its dependent, for pipeline runs (`withDependents`):
 * the dependent parks without a worker slot and is promoted by the dependency's finish. Beside a raw
 * BullMQ flow (child end → parent start). Two workers, one pipeline at a time.
 */
export const dependencyPromotion: Scenario = {
  name: 'dependency-promotion',
  title: 'dependency run end → dependent run start (pipeline, parked dependent promoted), beside a raw BullMQ flow child end → parent start',
  async run({ quick, redis, progress }) {
    const count = quick ? 60 : 1000;
    const warmUp = quick ? 5 : 50;
    const dependencyEnds = new Map<string, number>();
    const samples: number[] = [];
    const registry = registryOf([
      defineAgent({
        name: 'dependency',
        run: async (ctx) => {
          await sleep(DEPENDENCY_WORK_MS);
          dependencyEnds.set((ctx.data as { pipeline: number }).pipeline.toString(), preciseNow());
        },
      }),
      defineAgent({
        name: 'dependent',
        dependsOn: ['dependency'],
        run: async (ctx) => {
          const started = preciseNow();
          const key = (ctx.data as { pipeline: number }).pipeline.toString();
          const ended = dependencyEnds.get(key);
          if (ended === undefined) throw new Error(`dependent of pipeline ${key} started before its dependency ended`);
          samples.push(started - ended);
        },
      }),
    ]);

    const prefix = redis.prefix('deps-ours');
    const producer = openOrchestratorQueues(redis.url, prefix);
    const workers = await Promise.all(Array.from({ length: WORKERS }, () => startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: CONCURRENCY })));
    const waiters = workers.map((w) => completionWaiter(w.worker as unknown as Worker));
    // A pipeline's dependent is created parked (delayed) and promoted by the script that finishes
    // its dependency; our promotion leaves the job's `delay` field set (parked-runs.ts), so a
    // dependent that ran with it set was promoted, not woken by its safety deadline (60 s).
    let promoted = 0;
    for (const w of workers) {
      w.worker.on('completed', (job) => {
        if (job.name === 'dependent' && job.delay > 0) promoted += 1;
      });
    }
    const deps = { queue: producer.queues.agents, registry, retention: RETENTION, redis: producer.redis, keys: producer.keys };

    progress(`dependency-promotion: ${count} promotions per side, ${WORKERS} workers`);
    for (let i = 0; i < warmUp + count; i += 1) {
      if (i === warmUp) {
        samples.length = 0;
        promoted = 0;
      }
      const pipeline = await startPipeline(deps, 'dependency', { pipeline: i });
      const dependentRun = pipeline.runs.find((r) => r.agent === 'dependent')!.runId;
      await within(Promise.race(waiters.map((wait) => wait(dependentRun))), 30_000, `pipeline ${pipeline.pipelineId}`);
    }
    await Promise.all(workers.map((w) => w.close()));
    await producer.close();
    const oursSamples = [...samples];

    const rawOptions = runJobOptions(registry.require('dependency'), RETENTION);
    await rawFlowPromotions(redis, warmUp, rawOptions, slowChild);
    const rawSamples = await rawFlowPromotions(redis, count, rawOptions, slowChild);

    const o = summarise(oursSamples);
    const r = summarise(rawSamples);
    return [
      { metric: `dependency end → dependent start p50 (${o.count})`, value: o.p50, baseline: r.p50, unit: 'ms' },
      {
        metric: `dependency end → dependent start p99 (${o.count})`,
        value: o.p99,
        baseline: r.p99,
        unit: 'ms',
        target: { on: 'value', max: 5 },
        detail: { dependentsParkedAndPromoted: promoted, dependents: o.count },
      },
    ] satisfies Measurement[];
  },
};

/** The raw flow's child does the same work as our dependency. */
async function slowChild(_job: Job): Promise<void> {
  await sleep(DEPENDENCY_WORK_MS);
}
