import { FlowProducer, type Job, type JobsOptions } from 'bullmq';
import { completionWaiter } from '../completion-waiter.js';
import type { BenchRedis } from '../bench-redis.js';
import { openRawQueue, rawPrefix, startRawWorker } from '../raw-bullmq.js';
import { preciseNow, within } from '../samples.js';

/**
 * The baseline of dependency promotion: a raw BullMQ flow (one parent waiting for one child), two
 * workers on the queue. Each sample is the parent's processor start minus the moment the child's
 * processor returned — so it includes the child's completion round trip, as ours does.
 */
export async function rawFlowPromotions(redis: BenchRedis, count: number, jobOptions: JobsOptions, childWork: (job: Job) => Promise<void> = async () => {}): Promise<number[]> {
  const prefix = redis.prefix('flow-raw');
  const childEnds = new Map<string, number>();
  const samples: number[] = [];
  const processor = async (job: Job) => {
    if (job.name === 'child') {
      await childWork(job);
      const parentId = job.parent?.id;
      if (!parentId) throw new Error(`child ${job.id} has no parent`);
      childEnds.set(parentId, preciseNow());
      return null;
    }
    const childEnd = childEnds.get(job.id!);
    if (childEnd === undefined) throw new Error(`parent ${job.id} started before its child ended`);
    samples.push(preciseNow() - childEnd);
    childEnds.delete(job.id!);
    return null;
  };
  const workers = await Promise.all([1, 2].map(() => startRawWorker(redis.client(), prefix, 10, processor)));
  const waiters = workers.map((w) => completionWaiter(w));
  const queue = openRawQueue(redis.client(), prefix); // keeps the queue's meta in place, as a producer would
  const flows = new FlowProducer({ connection: redis.client(), prefix: rawPrefix(prefix) });
  flows.on('error', () => {});

  for (let i = 0; i < count; i += 1) {
    const tree = await flows.add({
      name: 'parent',
      queueName: 'agents',
      data: { trigger: 'pipeline' },
      opts: jobOptions,
      children: [{ name: 'child', queueName: 'agents', data: { trigger: 'pipeline' }, opts: jobOptions }],
    });
    const parentId = tree.job.id!;
    await within(Promise.race(waiters.map((wait) => wait(parentId))), 30_000, `raw flow parent ${parentId}`);
  }
  await Promise.all(workers.map((w) => w.close()));
  await Promise.all([flows.close(), queue.close()]);
  return samples;
}
