import type { Queue, Worker } from 'bullmq';
import { runJobOptions, triggerRun, type RunJobData } from '@werkpilot/shared';
import { completionWaiter } from '../completion-waiter.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, noOpAgent, openOrchestratorQueues, registryOf, startOrchestratorWorker, watchOutcomes } from '../orchestrator.js';
import { openRawQueue, startRawWorker } from '../raw-bullmq.js';
import { preciseNow, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

const AGENT = 'no-op';
const CONCURRENCY = 10; // WORKER_CONCURRENCY's default

/**
 * Enqueue → completed for single runs, one at a time, on an idle worker. Raw and ours alternate run
 * by run on the same Redis, so background load hits both sides alike.
 */
export const addedLatency: Scenario = {
  name: 'added-latency',
  title: 'enqueue → completed of single runs: ours (triggerRun + full worker path) minus raw BullMQ',
  async run({ quick, redis, progress }) {
    const registry = registryOf([noOpAgent(AGENT)]);
    const jobOptions = runJobOptions(registry.require(AGENT), RETENTION);

    const oursPrefix = redis.prefix('lat-ours');
    const ours = openOrchestratorQueues(redis.url, oursPrefix);
    const oursWorker = await startOrchestratorWorker({ url: redis.url, prefix: oursPrefix, registry, concurrency: CONCURRENCY });
    const oursDone = completionWaiter(oursWorker.worker as unknown as Worker);
    const outcomes = watchOutcomes(oursWorker.worker as unknown as Worker, 'single runs');

    const rawPrefixName = redis.prefix('lat-raw');
    const rawQueue: Queue = openRawQueue(redis.client(), rawPrefixName);
    const rawWorker = await startRawWorker(redis.client(), rawPrefixName, CONCURRENCY);
    const rawDone = completionWaiter(rawWorker);

    const runOurs = async () => {
      const start = preciseNow();
      const { runId } = await triggerRun({ queue: ours.queues.agents, registry, retention: RETENTION }, AGENT);
      return (await within(oursDone(runId), 30_000, `our run ${runId}`)) - start;
    };
    const runRaw = async () => {
      const start = preciseNow();
      const job = await rawQueue.add(AGENT, { agent: AGENT, trigger: 'manual' } satisfies RunJobData, jobOptions);
      return (await within(rawDone(job.id!), 30_000, `raw job ${job.id}`)) - start;
    };

    const warmUp = quick ? 20 : 200;
    const count = quick ? 150 : 2000;
    for (let i = 0; i < warmUp; i += 1) {
      await runRaw();
      await runOurs();
    }
    progress(`added-latency: ${count} single runs per side, alternating`);
    const oursSamples: number[] = [];
    const rawSamples: number[] = [];
    for (let i = 0; i < count; i += 1) {
      if (i % 2 === 0) {
        rawSamples.push(await runRaw());
        oursSamples.push(await runOurs());
      } else {
        oursSamples.push(await runOurs());
        rawSamples.push(await runRaw());
      }
    }
    await Promise.all([oursWorker.close(), rawWorker.close()]);
    await Promise.all([ours.close(), rawQueue.close()]);
    outcomes.check();

    const o = summarise(oursSamples);
    const r = summarise(rawSamples);
    return [
      { metric: 'enqueue → completed p50', value: o.p50, baseline: r.p50, unit: 'ms' },
      { metric: 'enqueue → completed p99', value: o.p99, baseline: r.p99, unit: 'ms' },
      { metric: 'added per run p50 (ours − raw)', value: o.p50 - r.p50, baseline: null, unit: 'ms' },
      { metric: 'added per run p99 (ours − raw)', value: o.p99 - r.p99, baseline: null, unit: 'ms', target: { on: 'value', max: 1 } },
    ] satisfies Measurement[];
  },
};
