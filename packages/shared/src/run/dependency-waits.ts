import type { ChainableCommander, Redis, Result } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import type { Job } from 'bullmq';
import { type Keys, legacyLastRunKey, pendingCountsKey, runDoneKey, runWaitersKey } from '../redis/keys.js';
import { PARKED_QUEUE_KEY_COUNT, PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';
import { QUEUE_NAMES, type RunJobData } from '../queues/queues.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { dependencySkipReason, type SkipReason } from './skip-reasons.js';

/**
 * Waiting for dependency runs of the same tick or pipeline, without holding a worker slot, and
 * promoting the waiter the moment its last pending dependency run finishes (event-driven).
 *
 * Protocol (exact under any number of workers; see docs/design.md#dependency-waits):
 *  1. A dependent that must wait is parked (a delayed job with a safety deadline): a pipeline's
 *     dependents are created parked and registered when the pipeline starts (pipeline.ts); a cron
 *     tick's dependent finds its dependencies unfinished when it starts (run admission), parks itself
 *     with `job.moveToDelayed` and then registers (PARK_LUA, one call) — or, when everything
 *     finished meanwhile, promotes itself in that same call.
 *  2. Registration adds it to the waiters hash of each unfinished dependency run (field: its run id,
 *     value: its priority, which the promotion needs) and sets its pending count in one hash of
 *     counters for the whole queue.
 *  3. The script that finishes a run (FINISH_RUN_LUA: in run completion, cancel and dead-lettering)
 *     marks it finished, counts each waiter down and promotes the waiters that reached zero — or all
 *     of them at once when the run ended badly (they will skip).
 * Registration and finishing are single scripts, so no finish slips between "is it finished?" and
 * "wait for it". The deadline is only a safety net (a dependency that vanished without finishing
 * through us); a dependent woken by it runs the protocol again, which is idempotent.
 *
 * Every key those scripts touch is passed in KEYS, although the finishing script cannot know which
 * runs wait for it: a waiter's counter is a field of one known hash (`runs:pending`), not a key of
 * its own, and what the promotion needs of the waiter's job (its priority) was recorded when it
 * registered, so its job hash is never touched (see parked-runs.ts).
 */

/**
 * How a dependency run ended: `ok`, `skipped:<reasons>`, `dlq:<error>`, `cancelled:<reason>`.
 * Dependents of a run that did not end `ok` are skipped.
 */
export type FinishedOutcome = 'ok' | `skipped:${string}` | `dlq:${string}` | `cancelled:${string}`;

export interface DependencyStatus {
  /** How many dependency runs are still queued, delayed or active. */
  pending: number;
  /** Skip reasons for dependency runs that ended badly (dead-lettered, skipped or cancelled). */
  problems: SkipReason[];
}

/** How long a parked run waits before re-checking by itself, should no promotion come. */
export const PARKED_RECHECK_MS = 60_000;

/** How long finished markers and waiters hashes live (seconds); see DependencyWaitsOptions.ttlSeconds. */
export const WAIT_TTL_SECONDS = 3_600;

/**
 * Lua: `dependencyStatus(completed, failed, legacyLast, deps)`: how a run's dependency runs stand.
 * `deps`: list of `{ done, waiters, job, stats, runId, agent }` (keys from KEYS; runId '' when the
 * dependency has no run in the tick or pipeline; agent '' for a run waited for only to keep an
 * order, the previous tick of a catch-up or backfill chain: however it ended, it is done). Returns the pending entries and the problems as a
 * flat `{ agent, outcome, ... }` list. A dependency without a run in the group is judged by its
 * last executed run (`lastRun` in its stats hash, or the hash older versions kept): still in the
 * DLQ is a problem.
 */
export const DEPENDENCY_STATUS_LUA = `
local function dependencyStatus(completed, failed, legacyLast, deps)
  local pending, problems = {}, {}
  for _, d in ipairs(deps) do
    local done = d.runId ~= '' and redis.call('GET', d.done)
    if done then
      if done ~= 'ok' and d.agent ~= '' then problems[#problems + 1] = d.agent; problems[#problems + 1] = done end
    elseif d.runId ~= '' and redis.call('ZSCORE', failed, d.runId) then
      if d.agent ~= '' then
        problems[#problems + 1] = d.agent
        problems[#problems + 1] = 'dlq:' .. (redis.call('HGET', d.job, 'failedReason') or 'failed')
      end
    elseif d.runId ~= '' and redis.call('ZSCORE', completed, d.runId) then
      -- finished before its marker was written, or the marker expired: done
    elseif d.runId ~= '' and redis.call('EXISTS', d.job) == 1 then
      pending[#pending + 1] = d
    else
      local last = redis.call('HGET', d.stats, 'lastRun') or redis.call('HGET', legacyLast, d.agent)
      if last then
        local sep = string.find(last, '|', 1, true)
        local lastRun, outcome = string.sub(last, 1, sep - 1), string.sub(last, sep + 1)
        if string.sub(outcome, 1, 4) == 'dlq:' and redis.call('ZSCORE', failed, lastRun) then
          problems[#problems + 1] = d.agent
          problems[#problems + 1] = 'last-dlq:' .. string.sub(outcome, 5)
        end
      end
    end
  end
  return pending, problems
end
local function dependencyList(keyOffset, argOffset, n)
  local deps = {}
  for i = 0, n - 1 do
    deps[#deps + 1] = { done = KEYS[keyOffset + i * 4], waiters = KEYS[keyOffset + 1 + i * 4], job = KEYS[keyOffset + 2 + i * 4],
      stats = KEYS[keyOffset + 3 + i * 4], runId = ARGV[argOffset + i * 2], agent = ARGV[argOffset + 1 + i * 2] }
  end
  return deps
end
`;

/**
 * Lua: `finishRun(done, waiters, pending, q, outcome, ttl)` marks a run of a tick or pipeline
 * finished and promotes its waiters (needs PROMOTE_PARKED_LUA). Invariant: each waiter's count drops
 * by one per finished dependency run, exactly once (the waiters hash is consumed as the marker is
 * set); a waiter is promoted when its count reaches zero, or at once when this run ended badly.
 * A count that goes below zero belongs to a waiter already promoted or gone: it is dropped.
 */
export const FINISH_RUN_LUA = `
local function finishRun(done, waiters, pending, q, outcome, ttl)
  redis.call('SET', done, outcome, 'EX', ttl)
  local entries = redis.call('HGETALL', waiters)
  if #entries == 0 then return 0 end
  redis.call('DEL', waiters)
  local promoted = 0
  for i = 1, #entries, 2 do
    local waiter = entries[i]
    if redis.call('HINCRBY', pending, waiter, -1) <= 0 or outcome ~= 'ok' then
      redis.call('HDEL', pending, waiter)
      if promoteParked(q, waiter, entries[i + 1]) then promoted = promoted + 1 end
    end
  end
  return promoted
end
`;

/**
 * Registers a parked run as a waiter of its unfinished dependency runs, or promotes it at once when
 * none is unfinished any more or one ended badly. Call it only once the job is parked (delayed).
 * KEYS: 1 completed, 2 failed, 3 legacy last-run hash, 4 pending counters, 5..12 queue keys for the
 *       promotion, then per dependency: done marker, waiters hash, job hash, stats hash.
 * ARGV: 1 run id, 2 its priority, 3 ttl seconds, then per dependency: its run id, its agent.
 * Returns { pending, problems (flat) }.
 */
const PARK_LUA = `${PROMOTE_PARKED_LUA}${DEPENDENCY_STATUS_LUA}
local runId, priority, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local q = slice(KEYS, 5, 12)
-- Parking is two calls (BullMQ's moveToDelayed, then this): a run cancelled or woken in between is
-- no longer delayed and must not be left behind as a waiter.
if not redis.call('ZSCORE', q[1], runId) then return { 0, {} } end
local pending, problems = dependencyStatus(KEYS[1], KEYS[2], KEYS[3], dependencyList(13, 4, (#KEYS - 12) / 4))
if #problems > 0 or #pending == 0 then
  redis.call('HDEL', KEYS[4], runId)
  promoteParked(q, runId, priority)
  return { 0, problems }
end
for _, d in ipairs(pending) do
  redis.call('HSET', d.waiters, runId, priority)
  redis.call('EXPIRE', d.waiters, ttl)
end
redis.call('HSET', KEYS[4], runId, #pending)
return { #pending, problems }
`;

/**
 * Finishes a run outside the run path (one BullMQ failed without the executor: it stalled too
 * often): records its last run and, for a run of a tick or pipeline, marks it and promotes its
 * waiters. KEYS: 1 stats hash, 2 done marker, 3 waiters hash, 4 pending counters, 5..12 queue keys.
 * ARGV: 1 outcome, 2 ttl seconds, 3 run id, 4 '1' when it can have waiters.
 */
const FINISH_ALONE_LUA = `${PROMOTE_PARKED_LUA}${FINISH_RUN_LUA}
if string.sub(ARGV[1], 1, 8) ~= 'skipped:' then redis.call('HSET', KEYS[1], 'lastRun', ARGV[3] .. '|' .. ARGV[1]) end
if ARGV[4] ~= '1' then return 0 end
return finishRun(KEYS[2], KEYS[3], KEYS[4], slice(KEYS, 5, 12), ARGV[1], tonumber(ARGV[2]))
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotParkForDependencies(numKeys: number, ...args: (string | number)[]): Result<[number, string[]], Context>;
    werkpilotFinishRun(...args: (string | number)[]): Result<number, Context>;
  }
}

const CRON_RUN_ID = /^repeat:([a-z0-9][a-z0-9-]*):(\d+)$/;
const PIPELINE_RUN_ID = /^pipeline:([^:]+):([a-z0-9][a-z0-9-]*)$/;
/** A backfilled tick (tick-runs.ts): `backfill:<backfillId>-<tickMillis>:<agent>`. */
const BACKFILL_RUN_ID = /^backfill:([^:]+)-(\d+):([a-z0-9][a-z0-9-]*)$/;

/** The deterministic job id of `agent`'s run in a pipeline. */
export function pipelineRunId(pipelineId: string, agent: string): string {
  return `pipeline:${pipelineId}:${agent}`;
}

/** One dependency of a run, and its run in the same tick or pipeline ('' when it has none). */
export interface DependencyRun {
  agent: string;
  runId: string;
}

/**
 * The runs this job may wait for: its dependencies' runs of the same cron tick
 * (`repeat:<dep>:<tickMillis>`, the job scheduler's deterministic id) or of the same pipeline
 * (`pipeline:<pipelineId>:<dep>`). A lone manual run has none (runId ''); a dependency whose run
 * does not exist (another schedule) is not waited for; either is judged by its last executed run.
 */
export function dependencyRunsOf(spec: Pick<AgentSpec, 'dependsOn'>, job: Pick<Job<RunJobData>, 'id' | 'data'>): DependencyRun[] {
  const after = job.data?.after;
  if (spec.dependsOn.length === 0) return after ? [{ agent: '', runId: after }] : [];
  const pipelineId = job.data?.pipelineId;
  const tick = job.id ? CRON_RUN_ID.exec(job.id) : null;
  const inPipeline = pipelineId !== undefined && job.id !== undefined && PIPELINE_RUN_ID.test(job.id);
  const runs = spec.dependsOn.map((agent) => ({
    agent,
    runId: inPipeline ? pipelineRunId(pipelineId!, agent) : tick ? `repeat:${agent}:${tick[2]}` : '',
  }));
  // A chained tick (catch-up, backfill) also waits for the tick before it, whatever its outcome.
  if (after) runs.push({ agent: '', runId: after });
  return runs;
}

/** The tick time (ms) of a cron run's id (`repeat:<agent>:<tickMillis>`), or undefined for other runs. */
export function cronTickOf(runId: string | undefined): number | undefined {
  const tick = runId ? CRON_RUN_ID.exec(runId) : null;
  return tick ? Number(tick[2]) : undefined;
}

/** Whether a finished run of this id can have waiters (it belongs to a tick or a pipeline). */
export function canHaveWaiters(runId: string | undefined): boolean {
  return runId !== undefined && (CRON_RUN_ID.test(runId) || PIPELINE_RUN_ID.test(runId) || BACKFILL_RUN_ID.test(runId));
}

/** KEYS and ARGV of DEPENDENCY_STATUS_LUA's `dependencyList` for `dependencies`. */
export function dependencyArgs(keys: Keys, dependencies: readonly DependencyRun[]): { keys: string[]; argv: string[] } {
  const out = { keys: [] as string[], argv: [] as string[] };
  for (const dep of dependencies) {
    // A dependency without a run still needs its KEYS slots; its run keys are never read.
    const id = dep.runId || '-';
    out.keys.push(runDoneKey(keys, id), runWaitersKey(keys, id), keys.bull(QUEUE_NAMES.agents, id), keys.agentStats(dep.agent));
    out.argv.push(dep.runId, dep.agent);
  }
  return out;
}

/** `dependency crm-sync run dead-lettered: boom`, `dependency crm-sync skipped: disabled`, `dependency crm-sync cancelled`. */
export function describeDependencyProblems(flat: readonly string[]): SkipReason[] {
  const problems: SkipReason[] = [];
  for (let i = 0; i < flat.length; i += 2) problems.push(dependencySkipReason(flat[i]!, describeOutcome(flat[i + 1]!)));
  return problems;
}

function describeOutcome(outcome: string): string {
  if (outcome.startsWith('last-dlq:')) return `last run dead-lettered: ${outcome.slice(9)}`;
  if (outcome.startsWith('dlq:')) return `run dead-lettered: ${outcome.slice(4)}`;
  if (outcome.startsWith('skipped:')) return `skipped: ${outcome.slice(8)}`;
  if (outcome.startsWith('cancelled:')) return 'cancelled';
  return outcome;
}

export interface DependencyWaitsOptions {
  redis: Redis;
  keys: Keys;
  /**
   * How long finished markers and waiters hashes live. Default 1 hour: a 1-second cron writes 3600
   * markers per agent at most. Past it, a dependent falls back to BullMQ's completed and failed
   * sets, and a parked run's periodic re-check registers it again, so a longer wait is still correct.
   */
  ttlSeconds?: number;
}

/** The calls of the protocol made outside the run's two scripts: parking a tick's dependent, finishing a run BullMQ failed by itself. */
export class DependencyWaits {
  private readonly redis: Redis;
  private readonly keys: Keys;
  readonly ttlSeconds: number;
  private readonly queueKeys: string[];

  constructor({ redis, keys, ttlSeconds = WAIT_TTL_SECONDS }: DependencyWaitsOptions) {
    this.redis = redis;
    this.keys = keys;
    this.ttlSeconds = ttlSeconds;
    this.queueKeys = parkedQueueKeys(keys);
    defineScripts(redis, { werkpilotParkForDependencies: PARK_LUA, [`werkpilotFinishRun-${4 + PARKED_QUEUE_KEY_COUNT}`]: FINISH_ALONE_LUA });
  }

  /**
   * Registers the parked job `runId` as a waiter of every unfinished dependency run, or promotes it
   * when there is nothing to wait for any more. Call it only after the job is parked (delayed).
   */
  async registerParked(runId: string, priority: number, dependencies: readonly DependencyRun[]): Promise<DependencyStatus> {
    const bull = (suffix: string) => this.keys.bull(QUEUE_NAMES.agents, suffix);
    const deps = dependencyArgs(this.keys, dependencies);
    const keys = [bull('completed'), bull('failed'), legacyLastRunKey(this.keys), pendingCountsKey(this.keys), ...this.queueKeys, ...deps.keys];
    const [pending, flat] = await this.redis.werkpilotParkForDependencies(keys.length, ...keys, runId, priority, this.ttlSeconds, ...deps.argv);
    return { pending, problems: describeDependencyProblems(flat) };
  }

  /** Finishes a run that ended without the run path (see FINISH_ALONE_LUA); returns how many waiters it promoted. */
  async finish(agent: string, runId: string, outcome: FinishedOutcome): Promise<number> {
    return this.redis.werkpilotFinishRun(
      this.keys.agentStats(agent),
      runDoneKey(this.keys, runId),
      runWaitersKey(this.keys, runId),
      pendingCountsKey(this.keys),
      ...this.queueKeys,
      outcome,
      this.ttlSeconds,
      runId,
      canHaveWaiters(runId) ? '1' : '0',
    );
  }
}

/**
 * Queues, on the caller's MULTI, the registration of a pipeline's dependents as waiters of their
 * dependency runs in the same pipeline, before any of those runs exists: the dependents are then
 * created parked (delayed by PARKED_RECHECK_MS) and the root's finish promotes them. `runs` maps
 * each agent of the pipeline to its run id and priority.
 */
export function addPipelineWaitersTo(
  multi: ChainableCommander,
  keys: Keys,
  runs: readonly { spec: Pick<AgentSpec, 'name' | 'dependsOn' | 'priority'>; runId: string }[],
  ttlSeconds = WAIT_TTL_SECONDS,
): void {
  const runIdOf = new Map(runs.map((r) => [r.spec.name, r.runId]));
  for (const { spec, runId } of runs) {
    const inPipeline = spec.dependsOn.filter((dep) => runIdOf.has(dep));
    if (inPipeline.length === 0) continue;
    for (const dep of inPipeline) {
      const waiters = runWaitersKey(keys, runIdOf.get(dep)!);
      multi.hset(waiters, runId, spec.priority);
      multi.expire(waiters, ttlSeconds);
    }
    multi.hset(pendingCountsKey(keys), runId, inPipeline.length);
  }
}
