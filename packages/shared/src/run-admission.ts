import { DelayedError, type Job } from 'bullmq';
import type { ChainableCommander, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from './agent.js';
import { DependencyWaits, dependencyRunsOf, type FinishedOutcome } from './dependency-waits.js';
import type { RunGate } from './gating.js';
import type { Keys } from './keys.js';
import { OverlapGuard } from './overlap.js';
import type { RunJobData } from './queues.js';

/**
 * What the executor asks after the gate let a run through and before it starts it: wait for the
 * dependency runs of the same tick or pipeline (parked, no worker slot), then take the agent's
 * overlap lease. And after the run: mark it finished (promoting its waiting dependents) and release
 * the lease (promoting the next queued run of the same agent).
 */
export interface RunAdmission {
  /**
   * Returns skip reasons (empty: start the run now, holding the agent's lease). Throws BullMQ's
   * DelayedError after parking the job, which the processor must let through untouched.
   */
  admit(spec: AgentSpec, job: Job<RunJobData>, token: string | undefined): Promise<string[]>;
  /** The run finished for good (success, skipped, or dead-lettered): promote its dependents. */
  finish(spec: AgentSpec, job: Job<RunJobData>, outcome: FinishedOutcome): Promise<void>;
  /**
   * `finish` in the round trip that records the outcome: queues the FINISH script on `pipeline`
   * and returns what to call with the pipeline's replies (it promotes the waiting dependents).
   */
  addFinishTo(pipeline: ChainableCommander, spec: AgentSpec, job: Job<RunJobData>, outcome: FinishedOutcome): (replies: unknown[]) => Promise<void>;
  /** The attempt is over (whatever the outcome): release the lease if this run holds it. */
  release(spec: AgentSpec, job: Job<RunJobData>): Promise<void>;
  close(): Promise<void>;
}

export interface RunAdmissionOptions {
  redis: Redis;
  keys: Keys;
  /** BullMQ's connection, for promoting parked runs (see DependencyWaitsOptions); default `redis`. */
  queueConnection?: Redis;
  log: Logger;
  /** Safety deadline of a parked run: it re-checks by itself after this, should no promotion come. */
  recheckMs?: number;
  clock?: () => number;
}

export function createRunAdmission({ redis, keys, log, queueConnection, recheckMs = 60_000, clock = Date.now }: RunAdmissionOptions): RunAdmission {
  const waits = new DependencyWaits({ redis, keys, ...(queueConnection ? { queueConnection } : {}) });
  const overlap = new OverlapGuard({ redis, keys });

  /** Parks the job, then runs `register`; promotes it at once if registering found nothing to wait for. */
  const park = async (job: Job<RunJobData>, token: string, deadline: number, register: () => Promise<boolean>): Promise<never> => {
    await job.moveToDelayed(deadline, token);
    const isWaiting = await register();
    if (!isWaiting) await waits.promote([job.id!]);
    throw new DelayedError();
  };

  const release = async (spec: AgentSpec, job: Job<RunJobData>) => {
    const next = await overlap.release(spec.name, job.id!);
    if (next) await waits.promote([next]);
  };

  return {
    async admit(spec, job, token) {
      const runId = job.id!;
      const dependencies = dependencyRunsOf(spec, job);
      // The usual case (nothing to wait for, lease free) costs one round trip: both asked at once.
      const [status, first] = await Promise.all([
        dependencies.length > 0 ? waits.inspect(runId, dependencies) : undefined,
        overlap.tryAcquire(spec.name, runId, spec.timeoutMs),
      ]);
      const mustWait = status !== undefined && (status.problems.length > 0 || (status.pending > 0 && token !== undefined));
      if (mustWait && first.status === 'acquired') await release(spec, job);
      if (status) {
        if (status.problems.length > 0) return status.problems;
        if (status.pending > 0 && token) {
          log.debug({ agent: spec.name, runId, pending: status.pending }, 'waiting for dependency runs');
          await park(job, token, clock() + recheckMs, async () => {
            const registered = await waits.register(runId, dependencies);
            return registered.pending > 0 && registered.problems.length === 0;
          });
        }
      }
      const lease = first;
      if (lease.status === 'acquired') return [];
      if (spec.overlap === 'skip' || !token || lease.status !== 'busy') return ['overlap'];
      log.debug({ agent: spec.name, runId }, 'queued behind the running run of the same agent');
      return park(job, token, clock() + Math.min(lease.leaseLeftMs + 100, recheckMs), async () => {
        const queued = await overlap.enqueueWaiter(spec.name, runId, spec.timeoutMs);
        return queued.status === 'busy';
      });
    },

    async finish(spec, job, outcome) {
      await waits.finish(spec.name, job.id!, outcome);
    },

    addFinishTo(pipeline, spec, job, outcome) {
      const index = pipeline.length;
      waits.addFinishTo(pipeline, spec.name, job.id!, outcome);
      return (replies) => waits.promote((replies[index] as string[] | undefined) ?? []);
    },

    release,

    close: () => waits.close(),
  };
}

/**
 * The gate's rules and the admission's dependency check and lease, asked at once (their Redis reads
 * share one round trip). Returns the skip reasons — the gate's first: a run the gate skips gives
 * back the lease it may have taken. Throws DelayedError when the run was parked; it re-runs all of
 * this when promoted, so a parked run that the gate would skip is skipped then.
 */
export async function gateAndAdmit(
  gates: readonly RunGate[],
  admission: RunAdmission | undefined,
  spec: AgentSpec,
  job: Job<RunJobData>,
  token: string | undefined,
): Promise<string[]> {
  const [gated, admitted] = await Promise.allSettled([
    Promise.all(gates.map((gate) => gate(spec, job))).then((all) => all.flat()),
    admission ? admission.admit(spec, job, token) : Promise.resolve([]),
  ]);
  const holdsLease = admission !== undefined && admitted.status === 'fulfilled' && admitted.value.length === 0;
  if (gated.status === 'rejected' || (gated.value.length > 0 && holdsLease)) {
    if (holdsLease) await admission.release(spec, job);
  }
  if (gated.status === 'rejected') throw gated.reason;
  if (admitted.status === 'rejected') throw admitted.reason;
  return gated.value.length > 0 ? gated.value : admitted.value;
}
