import { randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { PARKED_RECHECK_MS, addPipelineWaitersTo, pipelineRunId } from './dependency-waits.js';
import { RunNotFoundError } from '../process/errors.js';
import { type Keys, pipelineKey } from '../redis/keys.js';
import { runJobOptions, type Retention, type RunJobData } from '../queues/queues.js';
import type { Registry } from '../agents/registry.js';

/**
 * Pipeline runs (`withDependents`): a root agent's run and a run of every transitive dependent,
 * all carrying one pipeline id. Each run's job id is `pipeline:<pipelineId>:<agent>`, so a dependent
 * names its dependencies' runs of the same pipeline without a lookup and waits for them
 * (dependency-waits.ts): the subgraph runs in dependency order, each run with its own priority.
 * The dependents are created parked — delayed, already registered as waiters of their dependency
 * runs — so no worker takes one before its turn, and each is promoted by the script that finishes
 * its last dependency run. The pipeline's record (root, agents, start) is kept for `PIPELINE_TTL_SECONDS`.
 */
export const PIPELINE_TTL_SECONDS = 7 * 86_400;

export interface PipelineDeps {
  queue: Queue<RunJobData>;
  registry: Registry;
  retention: Retention;
  redis: Redis;
  keys: Keys;
  clock?: () => number;
  /** Safety deadline of the parked dependents (see PARKED_RECHECK_MS); tests make it long so a lost promotion shows. */
  parkedRecheckMs?: number;
}

export interface StartedPipeline {
  pipelineId: string;
  /** The root's run id. */
  runId: string;
  /** Every run of the pipeline, root first, in dependency order. */
  runs: { agent: string; runId: string }[];
}

/** How a pipeline's run stands: BullMQ's state, and for finished runs the outcome. */
export interface PipelineRun {
  agent: string;
  runId: string;
  /** BullMQ state (`waiting`, `prioritized`, `delayed` (parked or backing off), `active`, `completed`, `failed`), or `unknown` once removed (by retention, or cancelled while queued). */
  state: string;
  outcome: 'success' | 'skipped' | 'cancelled' | 'failed' | null;
  reasons?: string[];
  error?: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface PipelineStatus {
  pipelineId: string;
  root: string;
  createdAt: string;
  runs: PipelineRun[];
  /** True once every run has an outcome. */
  isFinished: boolean;
}

/**
 * Queues the root's run and every transitive dependent's run, all carrying a new pipeline id (or
 * `pipelineId`, chosen beforehand by an idempotent trigger); each gets `data`. First, in one MULTI, the record (so a listing never misses a run) and the dependents'
 * registrations as waiters; then one `addBulk` with the dependents parked and the root last, so the
 * root cannot finish before its dependents exist to be promoted.
 */
export async function startPipeline(deps: PipelineDeps, root: string, data?: unknown, pipelineId: string = randomUUID()): Promise<StartedPipeline> {
  const spec = deps.registry.require(root);
  const agents = [spec.name, ...deps.registry.dependentsOf(spec.name)];
  const runs = agents.map((agent) => ({ agent, runId: pipelineRunId(pipelineId, agent) }));
  const clock = deps.clock ?? Date.now;
  const multi = deps.redis
    .multi()
    .hset(pipelineKey(deps.keys, pipelineId), { root: spec.name, agents: JSON.stringify(agents), createdAt: String(clock()) })
    .expire(pipelineKey(deps.keys, pipelineId), PIPELINE_TTL_SECONDS);
  addPipelineWaitersTo(
    multi,
    deps.keys,
    runs.map(({ agent, runId }) => ({ spec: deps.registry.require(agent), runId })),
  );
  await multi.exec();
  const parkedFor = deps.parkedRecheckMs ?? PARKED_RECHECK_MS;
  await deps.queue.addBulk(
    [...runs.slice(1), runs[0]!].map(({ agent, runId }) => ({
      name: agent,
      data: { agent, trigger: agent === spec.name ? 'manual' : 'pipeline', pipelineId, ...(data !== undefined ? { data } : {}) },
      opts: { ...runJobOptions(deps.registry.require(agent), deps.retention), jobId: runId, ...(agent === spec.name ? {} : { delay: parkedFor }) },
    })),
  );
  return { pipelineId, runId: runs[0]!.runId, runs };
}

/** A pipeline's runs and their outcomes, in dependency order. Throws RunNotFoundError for an unknown or expired id. */
export async function getPipeline(deps: Pick<PipelineDeps, 'queue' | 'redis' | 'keys'>, pipelineId: string): Promise<PipelineStatus> {
  const record = await deps.redis.hgetall(pipelineKey(deps.keys, pipelineId));
  if (!record.root || !record.agents) throw new RunNotFoundError(`pipeline ${pipelineId}`);
  const agents = JSON.parse(record.agents) as string[];
  const runs = await Promise.all(
    agents.map(async (agent): Promise<PipelineRun> => {
      const runId = pipelineRunId(pipelineId, agent);
      // State first: a job read before it finished would show a finished state without its result.
      const state = await deps.queue.getJobState(runId);
      const job = await deps.queue.getJob(runId);
      if (!job || state === 'unknown') return { agent, runId, state: 'unknown', outcome: null, startedAt: null, finishedAt: null };
      const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);
      const base = { agent, runId, state, startedAt: iso(job.processedOn), finishedAt: iso(job.finishedOn) };
      if (state === 'failed') return { ...base, outcome: 'failed', error: job.failedReason };
      if (state !== 'completed') return { ...base, outcome: null };
      const result = job.returnvalue as { outcome?: string; reasons?: string[]; reason?: string } | null;
      if (result?.outcome === 'skipped') return { ...base, outcome: 'skipped', reasons: result.reasons ?? [] };
      if (result?.outcome === 'cancelled') return { ...base, outcome: 'cancelled', ...(result.reason ? { reasons: [result.reason] } : {}) };
      return { ...base, outcome: 'success' };
    }),
  );
  return {
    pipelineId,
    root: record.root,
    createdAt: new Date(Number(record.createdAt)).toISOString(),
    runs,
    isFinished: runs.every((r) => r.outcome !== null || r.state === 'unknown'),
  };
}

/** The runs a pipeline rooted at `root` will have, without queueing anything (an idempotent trigger names them first). */
export function plannedPipelineRuns(registry: Registry, root: string, pipelineId: string): { agent: string; runId: string }[] {
  const spec = registry.require(root);
  return [spec.name, ...registry.dependentsOf(spec.name)].map((agent) => ({ agent, runId: pipelineRunId(pipelineId, agent) }));
}
