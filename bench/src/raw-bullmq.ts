import { Queue, Worker, type JobsOptions, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';

/**
 * Plain BullMQ with nothing of ours: the baseline. Keys use the same `{prefix}` hash-tag shape as
 * the orchestrator's, so both sides do identical key work.
 */
export function rawPrefix(prefix: string): string {
  return `{${prefix}}`;
}

export function openRawQueue(connection: Redis, prefix: string, name = 'agents'): Queue {
  const queue = new Queue(name, { connection, prefix: rawPrefix(prefix) });
  queue.on('error', () => {});
  return queue;
}

export async function startRawWorker(connection: Redis, prefix: string, concurrency: number, processor: Processor = async () => null, name = 'agents'): Promise<Worker> {
  const worker = new Worker(name, processor, { connection, prefix: rawPrefix(prefix), concurrency });
  worker.on('error', () => {});
  await worker.waitUntilReady();
  return worker;
}

/** Adds `count` jobs, the i-th named `nameOf(i)`, in bulk batches (enqueueing is not what the throughput scenario times). */
export async function addMany(queue: Queue, nameOf: (i: number) => string, opts: JobsOptions, count: number): Promise<void> {
  const BATCH = 1000;
  for (let i = 0; i < count; i += BATCH) {
    const n = Math.min(BATCH, count - i);
    await queue.addBulk(
      Array.from({ length: n }, (_, j) => {
        const name = nameOf(i + j);
        return { name, data: { agent: name, trigger: 'manual' }, opts };
      }),
    );
  }
}
