import { describe, expect, it } from 'vitest';
import { Queue, Worker, type Job } from 'bullmq';
import { percentiles } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster } from './_dependency-cluster.js';

const redis = useTestRedis();

/**
 * Measures (and logs; asserts no speed) the delay from a dependency run's completion (its `run`
 * returning) to its waiting dependent's start (its `run` called): state and event commit, FINISH
 * script, BullMQ promote, pickup by a worker, the dependent's gate and dependency check.
 */
describe('promotion latency', () => {
  it('promotes 1000 parked dependents, each as its dependency completes, and logs p50/p99 of the delay', async () => {
    const PROMOTIONS = Number(process.env.PROMOTION_SAMPLES ?? 1000);
    const ended = new Map<string, number>();
    const delays: number[] = [];
    const c = await dependencyCluster(redis, [
      { name: 'source', run: async (ctx) => void ended.set(ctx.runId.split(':')[2]!, performance.now()) },
      {
        name: 'sink',
        dependsOn: ['source'],
        run: async (ctx) => {
          const tick = ctx.runId.split(':')[2]!;
          delays.push(performance.now() - ended.get(tick)!);
        },
      },
    ]);
    await Promise.all([c.startWorker({ id: 'w1', concurrency: 2 }), c.startWorker({ id: 'w2', concurrency: 2 })]);

    const BATCH = 100;
    for (let from = 0; from < PROMOTIONS; from += BATCH) {
      const ticks = Array.from({ length: Math.min(BATCH, PROMOTIONS - from) }, (_, i) => 100_000 + from + i);
      // Each tick's dependency is queued but held back (delayed), so its dependent parks waiting for it.
      const held = await c.queues.agents.addBulk(
        ticks.map((tick) => ({ name: 'source', data: { agent: 'source', trigger: 'cron' as const }, opts: { jobId: `repeat:source:${tick}`, delay: 600_000 } })),
      );
      for (const tick of ticks) await c.addTick(tick, ['sink']);
      await waitFor(async () => (await c.queues.agents.getDelayedCount()) === 2 * ticks.length, { timeoutMs: 20_000, what: 'the dependents to park' });
      // Then release the dependencies one at a time, so a promotion never queues behind another run.
      for (const job of held) {
        const before = delays.length;
        await job.promote();
        await waitFor(() => delays.length === before + 1, { intervalMs: 1, what: `the dependent of ${job.id} to start` });
      }
    }
    expect(delays).toHaveLength(PROMOTIONS);
    const { p50, p95, p99 } = percentiles(delays.map((d) => Math.round(d * 100) / 100));
    const baseline = await rawPromotionBaseline(c.keys.bullPrefix, PROMOTIONS);
    console.log(
      `raw BullMQ baseline (a processor calls job.promote() on a delayed job -> that job starts), same machine, same run: p50 ${baseline.p50} ms, p95 ${baseline.p95} ms, p99 ${baseline.p99} ms`,
    );
    console.log(`promotion delay over ${PROMOTIONS} promotions: p50 ${p50} ms, p95 ${p95} ms, p99 ${p99} ms, max ${Math.max(...delays).toFixed(2)} ms`);
  }, 120_000);
});

/** The same measurement with bare BullMQ: a processor promotes a delayed job and returns; when does that job start? */
async function rawPromotionBaseline(prefix: string, samples: number) {
  const connection = redis.client();
  const queue = new Queue('raw-baseline', { connection, prefix });
  const delays: number[] = [];
  let promotedAt = 0;
  let resolveStart: (() => void) | undefined;
  const workers = [redis.client(), redis.client()].map(
    (own) =>
      new Worker(
        'raw-baseline',
        async (job: Job) => {
          if (job.name === 'sink') {
            delays.push(performance.now() - promotedAt);
            resolveStart?.();
            return;
          }
          const sink = await queue.getJob(job.data.sink as string);
          promotedAt = performance.now();
          await sink!.promote();
        },
        { connection: own, prefix, concurrency: 2 },
      ),
  );
  try {
    for (let i = 0; i < samples; i++) {
      const sink = await queue.add('sink', {}, { delay: 600_000 });
      const started = new Promise<void>((r) => (resolveStart = r));
      await queue.add('source', { sink: sink.id });
      await started;
    }
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await queue.close();
  }
  return percentiles(delays.map((d) => Math.round(d * 100) / 100));
}
