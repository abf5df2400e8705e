import { Job, Queue } from 'bullmq';
import type { ChainableCommander, Redis, Result } from 'ioredis';
import type { AgentSpec } from './agent.js';
import type { Keys } from './keys.js';
import { QUEUE_NAMES, type RunJobData } from './queues.js';

/**
 * Waiting for dependency runs of the same tick or pipeline, without holding a worker slot, and
 * promoting the waiter the moment its last pending dependency run finishes (event-driven).
 *
 * Protocol (exact under any number of workers; see DESIGN.md › BullMQ facts):
 *  1. The dependent parks itself: `job.moveToDelayed(recheckDeadline, token)`, then throws DelayedError.
 *  2. Between the two, REGISTER (one Lua call) adds it as a waiter of each unfinished dependency run
 *     and stores how many it waits for — or reports that all have finished, and it promotes itself.
 *  3. When a run finishes (success, skipped, or failed for good), FINISH (one Lua call) marks it
 *     finished and hands back the waiters whose count reached zero; the caller promotes them.
 * Both steps are single scripts, so no finish can slip between "is it finished?" and "wait for it":
 * either REGISTER sees the finished marker, or FINISH sees the waiter. The delayed deadline is only a
 * safety net (a dependency that vanished without finishing through us); on waking, the dependent
 * simply runs the protocol again, which is idempotent.
 */

/** How a dependency run ended, as REGISTER reports it: `ok`, `skipped:<reasons>`, `dlq:<error>`. */
export type FinishedOutcome = 'ok' | `skipped:${string}` | `dlq:${string}`;

export interface DependencyStatus {
  /** How many dependency runs are still queued, delayed or active. */
  pending: number;
  /** Skip reasons for dependency runs that ended badly (dead-lettered or skipped). */
  problems: string[];
}

/**
 * KEYS: 1 dependent's pending counter, 2 BullMQ completed zset, 3 BullMQ failed zset,
 *       4 hash agent -> last executed run (`<runId>|<outcome>`),
 *       then per dependency: its run's finished marker, waiters set, BullMQ job hash.
 * ARGV: 1 dependent run id, 2 '1' to register (else only inspect), 3 ttl seconds,
 *       then per dependency: its run id ('' when it has no run in this tick or pipeline), its agent.
 * Invariant: a dependent is registered on exactly the dependency runs that are unfinished at this
 * instant, and its counter equals their number; nothing is registered if any ended badly.
 * A dependency without a run in the group is judged by its last executed run: still in the DLQ is
 * a problem. Returns { pending, { agent, outcome, agent, outcome, ... } }.
 */
const REGISTER_LUA = `
local pendingKey, completedKey, failedKey, lastKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local dependent, register, ttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local pendingRuns = {}
local problems = {}
local n = (#KEYS - 4) / 3
for i = 0, n - 1 do
  local doneKey, waitersKey, jobKey = KEYS[5 + i * 3], KEYS[6 + i * 3], KEYS[7 + i * 3]
  local runId, agent = ARGV[4 + i * 2], ARGV[5 + i * 2]
  local done = runId ~= '' and redis.call('GET', doneKey)
  if done then
    if done ~= 'ok' then table.insert(problems, agent); table.insert(problems, done) end
  elseif runId ~= '' and redis.call('ZSCORE', failedKey, runId) then
    table.insert(problems, agent)
    table.insert(problems, 'dlq:' .. (redis.call('HGET', jobKey, 'failedReason') or 'failed'))
  elseif runId ~= '' and redis.call('ZSCORE', completedKey, runId) then
    -- finished before its marker was written, or the marker expired: done
  elseif runId ~= '' and redis.call('EXISTS', jobKey) == 1 then
    table.insert(pendingRuns, waitersKey)
  else
    local last = redis.call('HGET', lastKey, agent)
    if last then
      local sep = string.find(last, '|', 1, true)
      local lastRun, outcome = string.sub(last, 1, sep - 1), string.sub(last, sep + 1)
      if string.sub(outcome, 1, 4) == 'dlq:' and redis.call('ZSCORE', failedKey, lastRun) then
        table.insert(problems, agent)
        table.insert(problems, 'last-dlq:' .. string.sub(outcome, 5))
      end
    end
  end
end
if register then
  if #problems == 0 and #pendingRuns > 0 then
    for _, waitersKey in ipairs(pendingRuns) do
      redis.call('SADD', waitersKey, dependent)
      redis.call('EXPIRE', waitersKey, ttl)
    end
    redis.call('SET', pendingKey, #pendingRuns, 'EX', ttl)
  else
    redis.call('DEL', pendingKey)
  end
end
return { #pendingRuns, problems }
`;

/**
 * KEYS: 1 the run's finished marker, 2 its waiters set, 3 hash agent -> last executed run.
 * ARGV: 1 outcome, 2 ttl seconds, 3 pending-counter key prefix, 4 pending-counter key suffix,
 *       5 agent, 6 run id, 7 '1' when the run belongs to a tick or pipeline (can have waiters).
 * Invariant: each waiter's counter drops by one per finished dependency run, exactly once (the
 * waiters set is consumed as the marker is set); a waiter is handed back when its counter reaches
 * zero, or at once when this run ended badly (it will skip). Counter keys are derived from the
 * prefix passed in, under the same hash tag as KEYS. Returns the run ids to promote.
 */
const FINISH_LUA = `
local outcome, ttl = ARGV[1], tonumber(ARGV[2])
if string.sub(outcome, 1, 8) ~= 'skipped:' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[6] .. '|' .. outcome)
end
if ARGV[7] ~= '1' then return {} end
redis.call('SET', KEYS[1], outcome, 'EX', ttl)
local waiters = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
local ready = {}
for _, waiter in ipairs(waiters) do
  local counter = ARGV[3] .. waiter .. ARGV[4]
  local left = redis.call('DECR', counter)
  if left <= 0 or outcome ~= 'ok' then
    redis.call('DEL', counter)
    table.insert(ready, waiter)
  end
end
return ready
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotRegisterWaiter(numKeys: number, ...args: (string | number)[]): Result<[number, string[]], Context>;
    werkpilotFinishRun(doneKey: string, waitersKey: string, lastKey: string, ...args: (string | number)[]): Result<string[], Context>;
  }
}

const CRON_RUN_ID = /^repeat:([a-z0-9][a-z0-9-]*):(\d+)$/;
const PIPELINE_RUN_ID = /^pipeline:([^:]+):([a-z0-9][a-z0-9-]*)$/;

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
export function dependencyRunsOf(spec: AgentSpec, job: Pick<Job<RunJobData>, 'id' | 'data'>): DependencyRun[] {
  const pipelineId = job.data?.pipelineId;
  const tick = job.id ? CRON_RUN_ID.exec(job.id) : null;
  return spec.dependsOn.map((agent) => ({
    agent,
    runId: pipelineId && job.id && PIPELINE_RUN_ID.test(job.id) ? pipelineRunId(pipelineId, agent) : tick ? `repeat:${agent}:${tick[2]}` : '',
  }));
}

/** Whether a finished run of this id can have waiters (it belongs to a tick or a pipeline). */
export function canHaveWaiters(runId: string | undefined): boolean {
  return runId !== undefined && (CRON_RUN_ID.test(runId) || PIPELINE_RUN_ID.test(runId));
}

export interface DependencyWaitsOptions {
  redis: Redis;
  keys: Keys;
  /**
   * Connection for the BullMQ Queue that runs BullMQ's promote script; default `redis`. Give it
   * BullMQ's connection: a Queue loads BullMQ's ~60 scripts onto its connection, and ioredis copies
   * every loaded script into each pipeline made on it, which costs ~50 µs per pipeline on ours.
   */
  queueConnection?: Redis;
  /**
   * How long finished markers and registrations live. Default 1 hour: a 1-second cron writes 3600
   * markers per agent at most. Past it, REGISTER falls back to BullMQ's completed and failed sets,
   * and a parked run's periodic re-check registers it again, so a longer wait is still correct.
   */
  ttlSeconds?: number;
}

export class DependencyWaits {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly ttlSeconds: number;
  private readonly queue: Queue<RunJobData>;

  constructor({ redis, keys, queueConnection = redis, ttlSeconds = 3_600 }: DependencyWaitsOptions) {
    this.redis = redis;
    this.keys = keys;
    this.ttlSeconds = ttlSeconds;
    // Used only to run BullMQ's own promote script.
    this.queue = new Queue<RunJobData>(QUEUE_NAMES.agents, { connection: queueConnection, prefix: keys.bullPrefix });
    this.queue.on('error', () => {});
    if (typeof (redis as Partial<Redis>).werkpilotRegisterWaiter !== 'function') {
      redis.defineCommand('werkpilotRegisterWaiter', { lua: REGISTER_LUA });
      redis.defineCommand('werkpilotFinishRun', { numberOfKeys: 3, lua: FINISH_LUA });
    }
  }

  /** Reads the dependency runs' status without registering (a cheap first look). */
  inspect(runId: string, dependencies: readonly DependencyRun[]): Promise<DependencyStatus> {
    return this.call(runId, dependencies, false);
  }

  /**
   * Registers `runId` as a waiter of every unfinished dependency run. Call it only after the job is
   * parked (delayed): a finish right after this call promotes it. When the result has no pending
   * run or has problems, nothing was registered and the caller must promote the job itself.
   */
  register(runId: string, dependencies: readonly DependencyRun[]): Promise<DependencyStatus> {
    return this.call(runId, dependencies, true);
  }

  /**
   * Queues FINISH on a pipeline the caller executes (to share the round trip that records the
   * outcome); its reply is the list of run ids to promote. Call it for every finished run: it also
   * records the agent's last executed run, which gates lone runs of its dependents.
   */
  addFinishTo(pipeline: ChainableCommander, agent: string, runId: string, outcome: FinishedOutcome): void {
    pipeline.werkpilotFinishRun(
      this.keys.key('run', runId, 'done'),
      this.keys.key('run', runId, 'waiters'),
      this.keys.key('agents', 'last-run'),
      outcome,
      this.ttlSeconds,
      this.keys.key('run', ''),
      ':pending',
      agent,
      runId,
      canHaveWaiters(runId) ? '1' : '0',
    );
  }

  /** Marks `runId` finished and promotes the dependents that were waiting only for it. */
  async finish(agent: string, runId: string, outcome: FinishedOutcome): Promise<string[]> {
    const pipeline = this.redis.pipeline();
    this.addFinishTo(pipeline, agent, runId, outcome);
    const [[err, ready]] = (await pipeline.exec()) as [[Error | null, string[]]];
    if (err) throw err;
    await this.promote(ready);
    return ready;
  }

  /**
   * Moves parked runs to the queue at once, with their own priority (BullMQ's promote keeps it).
   * A run that is no longer delayed (its safety deadline fired, or it was removed) is left alone:
   * it re-checks its dependencies when it starts.
   */
  async promote(runIds: readonly string[]): Promise<void> {
    await Promise.all(runIds.map((id) => new Job(this.queue, '', {} as RunJobData, {}, id).promote().catch(() => undefined)));
  }

  async close(): Promise<void> {
    await this.queue.close();
  }

  private async call(runId: string, dependencies: readonly DependencyRun[], register: boolean): Promise<DependencyStatus> {
    const k = this.keys;
    const bull = (suffix: string) => this.queue.toKey(suffix);
    const keys = [k.key('run', runId, 'pending'), bull('completed'), bull('failed'), k.key('agents', 'last-run')];
    const argv: (string | number)[] = [runId, register ? '1' : '0', this.ttlSeconds];
    for (const dep of dependencies) {
      // A dependency without a run still needs three KEYS slots; its run keys are never read.
      const id = dep.runId || '-';
      keys.push(k.key('run', id, 'done'), k.key('run', id, 'waiters'), bull(id));
      argv.push(dep.runId, dep.agent);
    }
    const [pending, flat] = await this.redis.werkpilotRegisterWaiter(keys.length, ...keys, ...argv);
    const problems: string[] = [];
    for (let i = 0; i < flat.length; i += 2) problems.push(describeOutcome(flat[i]!, flat[i + 1]!));
    return { pending, problems };
  }
}

/** `dependency crm-sync run dead-lettered: boom`, `dependency crm-sync skipped: disabled`. */
function describeOutcome(agent: string, outcome: string): string {
  if (outcome.startsWith('last-dlq:')) return `dependency ${agent} last run dead-lettered: ${outcome.slice(9)}`;
  if (outcome.startsWith('dlq:')) return `dependency ${agent} run dead-lettered: ${outcome.slice(4)}`;
  if (outcome.startsWith('skipped:')) return `dependency ${agent} skipped: ${outcome.slice(8)}`;
  return `dependency ${agent} ${outcome}`;
}
