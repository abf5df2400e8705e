/**
 * Cancelling a run from any process (API `POST /api/runs/:id/cancel`, CLI `cancel <runId>`).
 * Whatever state the run is in, it ends the way a dead-lettered run ends for its dependents — they
 * are skipped at once with `dependency <agent> cancelled` — but it is not a dead letter: it is
 * counted as `cancelled` (not a failure, no circuit restart), never enters the failed set (so no
 * DLQ count, alert or retry-all sees it), and `agent:cancelled` is its one outcome event, carrying
 * the state it was cancelled in.
 *
 * - Queued, delayed (retry backoff) or parked (waiting for a dependency run or its agent's turn):
 *   CANCEL_LUA takes it out of its queue list and finishes it in one step — outcome recorded,
 *   dependents promoted to be skipped, its place among the lease waiters or dependency waiters
 *   dropped, the lease or half-open trial it held (a run handed back keeps them) released — then
 *   BullMQ removes the job. Answer: `cancelled`.
 * - Running: only the worker running it can abort it (BullMQ's `Worker.cancelJob` acts in its own
 *   process), so the request is broadcast on the control channel `<prefix>:control:cancel`; the
 *   worker holding the run fires its AbortSignal with a RunCancelledError and pushes its answer on
 *   a short-lived ack list the caller BLPOPs. The run completes (BullMQ's completed set) with
 *   outcome `cancelled` through the ordinary completion script. Answer: `aborting` — the signal
 *   fired and the run will end as cancelled, whatever its code does with the signal.
 * - Finished (or finishing as the cancel arrives): RunFinishedError, `already completed`/`failed`.
 * - Unknown run: RunNotFoundError. A running run whose worker does not answer in time (it died;
 *   BullMQ's stalled check will hand the run to another worker) is a RunCancelTimeoutError, and
 *   nothing changed.
 */
import { randomBytes } from 'node:crypto';
import { UnrecoverableError, type Job, type Queue } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import { RECORD_RUN_LUA } from '../self-healing/agent-state.js';
import { BUS_EMIT_LUA, type EventBus } from '../messaging/bus.js';
import { CIRCUIT_LUA } from '../self-healing/circuit-breaker.js';
import { FINISH_RUN_LUA, WAIT_TTL_SECONDS, canHaveWaiters } from './dependency-waits.js';
import { InvalidInputError, RunFinishedError, RunNotFoundError, WerkpilotError } from '../process/errors.js';
import { cancelAckKey, cancelChannel, circuitKey, type Keys, leaseKey, leaseWaitersKey, pendingCountsKey, rateWaitingKey, restartsKey, runDoneKey, runWaitersKey } from '../redis/keys.js';
import { SLOTS_LUA, controlKeyValue, luaSlotMode, slotGroupOf, type SlotGroup } from './concurrency-slots.js';
import { LEASE_LUA, leaseTtlMs } from './overlap.js';
import { PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';
import { QUEUE_NAMES, type RunJobData } from '../queues/queues.js';
import type { Registry } from '../agents/registry.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { duplicateRedisConnection } from '../redis/redis-connection.js';

/**
 * The reason a cancelled run's AbortSignal carries. An UnrecoverableError, so nothing retries it
 * should it escape as a failure; the executor completes the run as `cancelled`.
 */
export class RunCancelledError extends UnrecoverableError {
  constructor(readonly reason: string) {
    super(`cancelled: ${reason}`);
  }
}

/** No worker confirmed that it aborted a running run. */
export class RunCancelTimeoutError extends WerkpilotError {
  constructor(
    readonly runId: string,
    readonly timeoutMs: number,
  ) {
    super(`no worker confirmed cancelling run ${runId} within ${timeoutMs} ms; the worker running it may have died (BullMQ will hand the run to another worker once it stalls): try again`);
  }
}

const MAX_REASON_LENGTH = 500;
const ACK_TTL_SECONDS = 60;

interface CancelMessage {
  runId: string;
  reason: string;
  ackKey: string;
}

/** Where a run stands on the worker executing it (for cancels). */
export type RunPhase = 'admitting' | 'running' | 'finishing';

/** The state a run was cancelled in (`agent:cancelled`'s `data.state`). */
export type CancelledState = 'queued' | 'delayed' | 'parked' | 'running';

/**
 * Takes a run that no worker holds out of the queue and finishes it as cancelled.
 * KEYS: 1 its lock, 2 its job hash, 3 the job schedulers zset, 4 wait, 5 paused, 6 prioritized,
 *       7 delayed, 8 completed, 9 failed, 10 active, 11 stats, 12 durations, 13 outcomes,
 *       14 circuit, 15 restarts, 16 gate epoch, 17 events stream, 18 done marker, 19 waiters hash,
 *       20 pending counters, 21 slot holders (lease or slots), 22 their waiters, 23..30 queue keys
 *       for promotions, 31 the agent's rate-waiting index; for a keyed agent, 32 its running index,
 *       33 its waiting index.
 * ARGV: 1 run id, 2 reason, 3 '1' when it can have waiters, 4 marker ttl s, 5 slot hold ttl ms,
 *       6 its priority, 7 agent, 8 now ms, 9 now ISO, 10 channel, 11 history length, 12 slot mode
 *       ('L' lease, 'Z' slots, '' none).
 * Invariants: a run is cancelled here only while no worker holds it (it could not be fetched
 * between the check and the removal); its dependents move on exactly as after a dead letter; the
 * lease and trial it held are handed on; one outcome, one `agent:cancelled`.
 * Returns { 'cancelled', state } | { 'running' } | { 'finished', state } | { 'scheduled' } | { 'unknown' }.
 */
const CANCEL_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${RECORD_RUN_LUA}${CIRCUIT_LUA}${FINISH_RUN_LUA}${LEASE_LUA}${SLOTS_LUA}
local runId = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then return { 'running' } end
local schedulerKey = redis.call('HGET', KEYS[2], 'rjk')
if schedulerKey then
  local tick = redis.call('ZSCORE', KEYS[3], schedulerKey)
  if tick and runId == 'repeat:' .. schedulerKey .. ':' .. tick then return { 'scheduled' } end
end
local state
if redis.call('ZREM', KEYS[7], runId) == 1 then state = 'delayed'
elseif redis.call('ZREM', KEYS[6], runId) == 1 then state = 'queued'
elseif redis.call('LREM', KEYS[4], 0, runId) > 0 then state = 'queued'
elseif redis.call('LREM', KEYS[5], 0, runId) > 0 then state = 'queued'
elseif redis.call('ZSCORE', KEYS[8], runId) then return { 'finished', 'completed' }
elseif redis.call('ZSCORE', KEYS[9], runId) then return { 'finished', 'failed' }
elseif redis.call('LPOS', KEYS[10], runId) then return { 'running' }
else return { 'unknown' } end
if redis.call('HDEL', KEYS[20], runId) == 1 and state == 'delayed' then state = 'parked' end
if redis.call('LREM', KEYS[22], 0, runId) > 0 and state == 'delayed' then state = 'parked' end
if redis.call('ZREM', KEYS[31], runId) > 0 and state == 'delayed' then state = 'parked' end
local reason, agent = ARGV[2], ARGV[7]
local outcome = 'cancelled:' .. reason
recordRun(KEYS[11], KEYS[12], KEYS[13], 'cancelled', '', ARGV[8], reason, '1', '0', runId .. '|' .. outcome, '0')
local ev = { stream = KEYS[17], channel = ARGV[10], maxlen = ARGV[11] }
local now = tonumber(ARGV[8])
circuitRecord({ circuit = KEYS[14], restarts = KEYS[15], epoch = KEYS[16] }, ev, 'cancelled', runId, now, 0, 0, '', agent, ARGV[9])
local q = slice(KEYS, 23, 30)
if ARGV[12] ~= '' then slotRelease(ARGV[12], KEYS[21], KEYS[22], runId, ARGV[5], ARGV[6], q) end
if #KEYS >= 33 then
  redis.call('ZREM', KEYS[32], runId)
  redis.call('ZREM', KEYS[33], runId)
end
if ARGV[3] == '1' then finishRun(KEYS[18], KEYS[19], KEYS[20], q, outcome, tonumber(ARGV[4])) end
emit(ev.stream, ev.channel, ev.maxlen, 'agent:cancelled', agent, ARGV[9], { runId = runId, reason = reason, state = state })
return { 'cancelled', state }
`;

type CancelReply = ['cancelled', CancelledState] | ['running'] | ['finished', string] | ['scheduled'] | ['unknown'];

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotCancelRun(...args: (string | number)[]): Result<CancelReply, Context>;
  }
}

export interface CancelRunDeps {
  queue: Queue<RunJobData>;
  /** Command connection; duplicated for the short blocking wait on the worker's acknowledgement. */
  redis: Redis;
  keys: Keys;
  bus: EventBus;
  /** The agents (their timeouts size the lease a cancelled holder hands on); without it, 1 hour. */
  registry?: Registry;
  /** The workers' LOCK_DURATION_MS (see leaseTtlMs). Default 30000. */
  lockDurationMs?: number;
  /** How long to wait for the worker running the run to confirm. Default 5000. */
  ackTimeoutMs?: number;
  log?: Logger;
}

export type CancelRunResult =
  | { runId: string; agent: string; outcome: 'cancelled'; state: Exclude<CancelledState, 'running'> }
  | { runId: string; agent: string; outcome: 'aborting'; state: 'running'; workerId: string };

/**
 * Cancels run `runId` with `reason` (see above). Throws RunNotFoundError, RunFinishedError,
 * RunCancelTimeoutError or InvalidInputError (bad id or reason, or the next tick of a schedule).
 */
export async function cancelRun(deps: CancelRunDeps, runId: string, reason = 'cancelled by operator'): Promise<CancelRunResult> {
  if (typeof runId !== 'string' || runId.length === 0) throw new InvalidInputError('cancel: a run id is required');
  if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > MAX_REASON_LENGTH) {
    throw new InvalidInputError(`cancel: reason must be a non-empty string of at most ${MAX_REASON_LENGTH} characters`);
  }
  const job = await deps.queue.getJob(runId);
  if (!job) throw new RunNotFoundError(runId);
  const agent = job.name;
  // A run caught while a worker admits it may still park or be skipped: then look again.
  for (let attempt = 1; ; attempt++) {
    const result = await cancelOnce(deps, job, agent, reason);
    if (result !== 'retry' || attempt === MAX_LOOKS) {
      if (result === 'retry') throw new RunCancelTimeoutError(runId, deps.ackTimeoutMs ?? 5000);
      return result;
    }
    await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
  }
}

/** How often a cancel looks at a run that was being admitted before it gives up. */
const MAX_LOOKS = 5;

async function cancelOnce(deps: CancelRunDeps, job: Job<RunJobData>, agent: string, reason: string): Promise<CancelRunResult | 'retry'> {
  const runId = job.id!;
  const reply = await finishQueuedRun(deps, runId, agent, job.priority, reason, job.data?.data);
  switch (reply[0]) {
    case 'cancelled':
      // The job is out of every queue list already; this deletes its hash and logs.
      await job.remove().catch((err: unknown) => deps.log?.warn({ err, runId }, 'cancelled run could not be deleted; it stays as an orphan job'));
      return { runId, agent, outcome: 'cancelled', state: reply[1] as Exclude<CancelledState, 'running'> };
    case 'finished':
      throw new RunFinishedError(runId, reply[1]);
    case 'scheduled':
      throw new InvalidInputError(`run ${runId} is the next scheduled tick of agent ${agent} and cannot be cancelled; disable the agent to stop its schedule`);
    case 'unknown':
      throw new RunNotFoundError(runId);
    case 'running': {
      const answer = await abortOnOwningWorker(deps, runId, reason);
      if (answer.kind === 'aborting') return { runId, agent, outcome: 'aborting', state: 'running', workerId: answer.workerId };
      if (answer.kind === 'retry') return 'retry';
      const state = await deps.queue.getJobState(runId);
      throw new RunFinishedError(runId, state === 'failed' ? 'failed' : 'completed');
    }
  }
}

/**
 * The slot group a queued run of `agent` with input `data` belongs to: computed from the same key
 * function as the worker's, so a parked keyed run is taken off the right waiters list. Without the
 * registry (or for a key function that fails on this data: such a run never took a slot), the
 * agent's unkeyed lease.
 */
function slotGroupOfRun(deps: CancelRunDeps, agent: string, data: unknown): SlotGroup | undefined {
  const spec = deps.registry?.get(agent);
  const unkeyed = { mode: 'lease' as const, holders: leaseKey(deps.keys, agent), waiters: leaseWaitersKey(deps.keys, agent), limit: 1 };
  if (!spec) return unkeyed;
  if (spec.overlap === 'allowAll') return undefined;
  try {
    const keyValue = controlKeyValue(spec.concurrency.key, data, 'concurrency.key', spec.name);
    return slotGroupOf(deps.keys, spec, keyValue);
  } catch {
    return undefined;
  }
}

function finishQueuedRun(deps: CancelRunDeps, runId: string, agent: string, priority: number, reason: string, data: unknown): Promise<CancelReply> {
  const { redis, keys } = deps;
  defineScripts(redis, { werkpilotCancelRun: CANCEL_LUA });
  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const spec = deps.registry?.get(agent);
  const slot = slotGroupOfRun(deps, agent, data);
  const indexKeys = slot?.index ? [slot.index.running, slot.index.waiting] : [];
  const now = Date.now();
  return redis.werkpilotCancelRun(
    31 + indexKeys.length,
    bull(`${runId}:lock`),
    bull(runId),
    bull('repeat'),
    bull('wait'),
    bull('paused'),
    bull('prioritized'),
    bull('delayed'),
    bull('completed'),
    bull('failed'),
    bull('active'),
    keys.agentStats(agent),
    keys.agentDurations(agent),
    keys.agentOutcomes(agent),
    circuitKey(keys, agent),
    restartsKey(keys, agent),
    keys.gateEpoch,
    keys.eventsStream,
    runDoneKey(keys, runId),
    runWaitersKey(keys, runId),
    pendingCountsKey(keys),
    slot?.holders ?? leaseKey(keys, agent),
    slot?.waiters ?? leaseWaitersKey(keys, agent),
    ...parkedQueueKeys(keys),
    rateWaitingKey(keys, agent),
    ...indexKeys,
    runId,
    reason,
    canHaveWaiters(runId) ? '1' : '0',
    WAIT_TTL_SECONDS,
    spec ? leaseTtlMs(spec.timeoutMs, deps.lockDurationMs ?? 30_000) : 3_600_000,
    priority,
    agent,
    now,
    new Date(now).toISOString(),
    keys.eventsChannel,
    deps.bus.historySize,
    slot ? luaSlotMode(slot.mode) : '',
  );
}

/** A worker's answer: it aborted the run, the run had finished, or the run was still being admitted (look again). */
type AckKind = 'aborting' | 'finished' | 'retry';

async function abortOnOwningWorker(deps: CancelRunDeps, runId: string, reason: string): Promise<{ kind: AckKind; workerId: string }> {
  const timeoutMs = deps.ackTimeoutMs ?? 5000;
  const ackKey = cancelAckKey(deps.keys, randomBytes(8).toString('hex'));
  // The wait blocks a connection, so it gets its own; cancels are rare operator actions.
  const waiter = duplicateRedisConnection(deps.redis, 'cancel-ack');
  waiter.on('error', () => {});
  try {
    const message: CancelMessage = { runId, reason, ackKey };
    await deps.redis.publish(cancelChannel(deps.keys), JSON.stringify(message));
    const ack = await waiter.blpop(ackKey, timeoutMs / 1000);
    if (!ack) {
      // No worker holds it any more: it may have finished meanwhile.
      const state = await deps.queue.getJobState(runId);
      if (state === 'completed' || state === 'failed') return { kind: 'finished', workerId: '' };
      throw new RunCancelTimeoutError(runId, timeoutMs);
    }
    const separator = ack[1].indexOf(':');
    return { kind: ack[1].slice(0, separator) as AckKind, workerId: ack[1].slice(separator + 1) };
  } finally {
    waiter.disconnect();
    await deps.redis.del(ackKey).catch(() => undefined);
  }
}

/**
 * Asks whichever worker runs `runId` to cancel it, without waiting for an answer: how a
 * `cancelOther` run displaces the running one (run-admission.ts). A run not running at that moment
 * is not affected; the waiting run asks again when its short re-check deadline passes.
 */
export function sendCancel(redis: Redis, keys: Keys, runId: string, reason: string): Promise<number> {
  const message: CancelMessage = { runId, reason, ackKey: '' };
  return redis.publish(cancelChannel(keys), JSON.stringify(message));
}

/** What a cancel listener needs of a BullMQ Worker. */
export interface CancellableWorker {
  cancelJob(jobId: string, reason?: string): boolean;
}

export interface RunCancelListenerOptions {
  /** Command connection (for the ack); duplicated for the control-channel subscription. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  worker: CancellableWorker;
  workerId: string;
  /**
   * Where run `runId` stands on this worker (ExecutorDeps.runPhases). Only a `running` run is
   * aborted; one still `admitting` may yet park or be skipped, so the canceller is told to look
   * again; a `finishing` one has sent its outcome, so it is told the run finished.
   */
  phaseOf?: (runId: string) => RunPhase | undefined;
}

export interface RunCancelListener {
  close(): Promise<void>;
}

/**
 * Listens for cancel requests and aborts the named run when this worker is running it.
 * Resolves once subscribed, so a cancel sent afterwards is never missed.
 */
export async function startRunCancelListener(options: RunCancelListenerOptions): Promise<RunCancelListener> {
  const { redis, keys, worker, workerId } = options;
  const phaseOf = options.phaseOf ?? (() => 'running' as const);
  const log = options.log.child({ component: 'run-cancel', workerId });
  const subscriber = duplicateRedisConnection(redis, 'cancel-sub');
  subscriber.on('error', () => {});
  subscriber.on('message', (_channel: string, raw: string) => {
    let message: CancelMessage;
    try {
      message = JSON.parse(raw) as CancelMessage;
    } catch {
      return;
    }
    const phase = phaseOf(message.runId);
    if (phase === undefined) return;
    // BullMQ hands `reason` to AbortController.abort unchanged; an Error tells the executor why.
    if (phase === 'running' && !worker.cancelJob(message.runId, new RunCancelledError(message.reason) as unknown as string)) return;
    const answer = phase === 'running' ? 'aborting' : phase === 'admitting' ? 'retry' : 'finished';
    log.info({ runId: message.runId, reason: message.reason, answer }, 'cancel request for a run of this worker');
    if (!message.ackKey) return;
    redis
      .multi()
      .rpush(message.ackKey, `${answer}:${workerId}`)
      .expire(message.ackKey, ACK_TTL_SECONDS)
      .exec()
      .catch((err: unknown) => log.warn({ err }, 'could not acknowledge a cancel'));
  });
  await subscriber.subscribe(cancelChannel(keys));
  return {
    close: async () => {
      await subscriber.quit().catch(() => subscriber.disconnect());
    },
  };
}
