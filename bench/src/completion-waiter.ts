import type { Job, Worker } from 'bullmq';

/**
 * Resolves per job id when a worker reports it completed, whether the report arrives before or
 * after the caller starts waiting (a fast worker can finish a job before `add` has returned).
 */
export function completionWaiter(worker: Pick<Worker, 'on'>): (jobId: string) => Promise<number> {
  const waiting = new Map<string, (at: number) => void>();
  const early = new Map<string, number>();
  worker.on('completed', (job: Job) => {
    const at = performance.timeOrigin + performance.now();
    const resolve = waiting.get(job.id!);
    if (resolve) {
      waiting.delete(job.id!);
      resolve(at);
    } else early.set(job.id!, at);
  });
  return (jobId) => {
    const at = early.get(jobId);
    if (at !== undefined) {
      early.delete(jobId);
      return Promise.resolve(at);
    }
    return new Promise((resolve) => waiting.set(jobId, resolve));
  };
}
