import type { Worker } from 'bullmq';
import { defineAgent, triggerRun } from '@werkpilot/shared';
import { completionWaiter } from '../completion-waiter.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, registryOf, startOrchestratorWorker } from '../orchestrator.js';
import { preciseNow, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';
import { rawPubSubRoundTrips } from './raw-pubsub-round-trip.js';

/**
 * `ctx.request` round trips from a running agent to another agent's `onRequest`, answered by one of
 * two workers hosting it, one request at a time; beside a bare Redis pub/sub round trip.
 */
export const rpcRoundTrip: Scenario = {
  name: 'rpc-round-trip',
  title: 'ctx.request → onRequest → reply round trip between agents on two workers, beside a raw Redis pub/sub round trip',
  async run({ quick, redis, progress }) {
    const count = quick ? 200 : 2000;
    const warmUp = quick ? 20 : 200;
    const samples: number[] = [];
    const registry = registryOf([
      defineAgent({ name: 'responder', run: async () => null, onRequest: async (payload) => payload }),
      defineAgent({
        name: 'caller',
        timeoutMs: 600_000,
        retry: { attempts: 1 },
        run: async (ctx) => {
          for (let i = 0; i < warmUp + count; i += 1) {
            const start = preciseNow();
            const answer = await ctx.request<{ n: number }>('responder', { n: i }, { timeoutMs: 10_000 });
            if (answer.n !== i) throw new Error(`request ${i} got the answer to ${answer.n}`);
            if (i >= warmUp) samples.push(preciseNow() - start);
          }
        },
      }),
    ]);
    const prefix = redis.prefix('rpc-ours');
    const producer = openOrchestratorQueues(redis.url, prefix);
    const workers = await Promise.all([1, 2].map(() => startOrchestratorWorker({ url: redis.url, prefix, registry, concurrency: 10 })));
    const waiters = workers.map((w) => completionWaiter(w.worker as unknown as Worker));
    const failures = workers.map((w) => new Promise<never>((_, reject) => w.worker.on('failed', (_job, err) => reject(err))));

    progress(`rpc-round-trip: ${count} requests per side`);
    const { runId } = await triggerRun({ queue: producer.queues.agents, registry, retention: RETENTION }, 'caller');
    await within(Promise.race([...waiters.map((wait) => wait(runId)), ...failures]), 300_000, `the caller's ${count} requests`);
    await Promise.all(workers.map((w) => w.close()));
    await producer.close();

    await rawPubSubRoundTrips(redis, warmUp);
    const rawSamples = await rawPubSubRoundTrips(redis, count);
    const o = summarise(samples);
    const r = summarise(rawSamples);
    return [
      { metric: `request round trip p50 (${o.count})`, value: o.p50, baseline: r.p50, unit: 'ms', target: { on: 'value', max: 0.5 } },
      { metric: `request round trip p99 (${o.count})`, value: o.p99, baseline: r.p99, unit: 'ms', target: { on: 'value', max: 2 } },
    ] satisfies Measurement[];
  },
};
