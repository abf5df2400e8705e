import type { Job } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { AgentSpec } from './agent.js';
import { RECORD_RUN_LUA, recordArgs, type RunRecord } from './agent-state.js';
import { BUS_EMIT_LUA } from './bus.js';
import { CIRCUIT_LUA, RESTART_WINDOW_MS, circuitKey, restartMember, restartsKey, type CircuitSettings } from './circuit-breaker.js';
import { FINISH_RUN_LUA, WAIT_TTL_SECONDS, canHaveWaiters, pendingCountsKey, runDoneKey, runWaitersKey, type FinishedOutcome } from './dependency-waits.js';
import type { Keys } from './keys.js';
import { skipCausesKey } from './nightly.js';
import { LEASE_LUA, leaseKey, leaseTtlMs, leaseWaitersKey } from './overlap.js';
import { PARKED_QUEUE_KEY_COUNT, PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';
import { QUEUE_NAMES, type RunJobData } from './queues.js';

/**
 * Everything that happens when a run's attempt ends, in one script (COMPLETE_LUA): the agent's
 * counters, last-run fields, samples and exported figures; the circuit, only when it matters (a
 * failure, or the end of the half-open trial); the outcome's events; for a run that ended for good,
 * its finished marker and the promotion of the dependents waiting for it; and the release of the
 * agent's overlap lease with its hand-off to the next queued run.
 *
 * It is sent on BullMQ's connection right before the processor returns (or throws), without
 * waiting for its reply: BullMQ's own completion (moveToFinished) follows on the same connection,
 * so Redis runs the two back to back and both replies come back together — the run costs no round
 * trip of ours at its end. ioredis sends a script's body (EVAL) the first time it is used on a
 * socket, so no NOSCRIPT retry can reorder the two after a reconnect.
 *
 * Fenced by the run's lock token: the script first checks that BullMQ's lock of the job still
 * holds this attempt's token. A copy of a run that lost its lock (event loop or Redis stalled past
 * LOCK_DURATION_MS, and BullMQ's stalled-job recovery started the run again) therefore records
 * nothing and releases nothing — exactly one outcome per run, one promotion of its dependents —
 * and BullMQ's moveToFinished right behind it fails on the same lock check.
 */

export interface Completion {
  record: RunRecord;
  /** The outcome's events, as JSON (EventBus.encode), published in this order. */
  events: string[];
  /** Set when the run ended for good (not a failure that will be retried): its dependents move on. */
  finished?: FinishedOutcome;
  /** Whether this run took the agent's overlap lease (run admission said `run`). */
  holdsLease: boolean;
  /** Whether this run holds the half-open trial of its agent's circuit. */
  isTrial: boolean;
  /** Dependencies named by a skipped run's reasons, for the nightly report's skip causes. */
  skipCauses?: readonly string[];
}

export interface RunCompletionOptions {
  /** BullMQ's connection (see above); the completion is sent on it. */
  connection: Redis;
  keys: Keys;
  circuit?: CircuitSettings;
  /** The worker's LOCK_DURATION_MS (the lease TTL the hand-off gives the next run). */
  lockDurationMs?: number;
  historyLength?: number;
}

export interface RunCompletion {
  /**
   * Sends the completion of `job`'s attempt (not awaited by the run path). Resolves to `fenced`
   * when this copy no longer held the run's lock, so nothing was recorded.
   */
  complete(spec: AgentSpec, job: Job<RunJobData>, token: string | undefined, completion: Completion): Promise<'ok' | 'fenced'>;
}

/**
 * KEYS: 1 the job's lock, 2 stats, 3 durations, 4 outcomes, 5 circuit, 6 restarts, 7 gate epoch,
 *       8 events stream, 9 done marker, 10 waiters hash, 11 pending counters, 12 lease,
 *       13 lease waiters, 14 skip causes, 15..22 queue keys for promotions (parked-runs.ts).
 * ARGV: 1 lock token ('' = unfenced), 2 run id, 3..12 the record (agent-state.ts recordArgs),
 *       13 finished outcome ('' = not finished), 14 '1' when it can have waiters, 15 marker ttl s,
 *       16 '1' when it holds the lease, 17 lease ttl ms, 18 the agent's priority (for the hand-off),
 *       19 '1' to apply the outcome to the circuit, 20 now, 21 window ms, 22 max restarts,
 *       23 restart member, 24 agent, 25 at (ISO), 26 channel, 27 history length,
 *       28 n skip causes, then the skip causes, then the events (JSON).
 * Invariants: only the attempt holding the job's lock records anything; one outcome per attempt;
 * each waiter promoted once; the lease released only by its holder and handed to one waiter.
 * Returns 'ok' or 'fenced'.
 */
const COMPLETE_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${RECORD_RUN_LUA}${CIRCUIT_LUA}${FINISH_RUN_LUA}${LEASE_LUA}
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
local runId = ARGV[2]
recordRun({ stats = KEYS[2], durations = KEYS[3], outcomes = KEYS[4] }, {
  outcome = ARGV[3], duration = ARGV[4], at = ARGV[5], error = ARGV[6], attempt = ARGV[7], timedOut = ARGV[8],
  lastRun = ARGV[9], bucket = ARGV[10], maxDurations = ARGV[11], maxOutcomes = ARGV[12] })
local ev = { stream = KEYS[8], channel = ARGV[26], maxlen = ARGV[27] }
if ARGV[19] == '1' then
  circuitRecord({ circuit = KEYS[5], restarts = KEYS[6], epoch = KEYS[7] }, ev, ARGV[3], runId,
    tonumber(ARGV[20]), tonumber(ARGV[21]), tonumber(ARGV[22]), ARGV[23], ARGV[24], ARGV[25])
end
local causes = tonumber(ARGV[28])
for i = 29, 28 + causes do redis.call('HINCRBY', KEYS[14], ARGV[i], 1) end
for i = 29 + causes, #ARGV do emitJson(ev.stream, ev.channel, ev.maxlen, ARGV[i]) end
local q = slice(KEYS, 15, 22)
if ARGV[13] ~= '' and ARGV[14] == '1' then finishRun(KEYS[9], KEYS[10], KEYS[11], q, ARGV[13], tonumber(ARGV[15])) end
if ARGV[16] == '1' then leaseRelease(KEYS[12], KEYS[13], runId, ARGV[17], ARGV[18], q) end
return 'ok'
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotCompleteRun(...args: (string | number)[]): Result<'ok' | 'fenced', Context>;
  }
}

const COMPLETE_KEY_COUNT = 14 + PARKED_QUEUE_KEY_COUNT;

/** Per agent, the keys and figures every completion of its runs passes unchanged. */
interface AgentKeys {
  head: string[];
  tail: string[];
  leaseTtl: number;
  priority: number;
}

export function createRunCompletion({ connection, keys, circuit, lockDurationMs = 30_000, historyLength }: RunCompletionOptions): RunCompletion {
  if (typeof (connection as Partial<Redis>).werkpilotCompleteRun !== 'function') {
    connection.defineCommand('werkpilotCompleteRun', { numberOfKeys: COMPLETE_KEY_COUNT, lua: COMPLETE_LUA });
  }
  const windowMs = circuit?.windowMs ?? RESTART_WINDOW_MS;
  const clock = circuit?.clock ?? Date.now;
  const history = historyLength ?? circuit?.historyLength ?? 1000;
  const queueKeys = parkedQueueKeys(keys);
  const noRun = [runDoneKey(keys, '-'), runWaitersKey(keys, '-')];
  const byAgent = new Map<AgentSpec, AgentKeys>();
  const agentKeys = (spec: AgentSpec): AgentKeys => {
    let found = byAgent.get(spec);
    if (!found) {
      found = {
        head: [keys.agentStats(spec.name), keys.agentDurations(spec.name), keys.agentOutcomes(spec.name), circuitKey(keys, spec.name), restartsKey(keys, spec.name), keys.gateEpoch, keys.eventsStream],
        tail: [pendingCountsKey(keys), leaseKey(keys, spec.name), leaseWaitersKey(keys, spec.name), skipCausesKey(keys, spec.name), ...queueKeys],
        leaseTtl: leaseTtlMs(spec.timeoutMs, lockDurationMs),
        priority: spec.priority,
      };
      byAgent.set(spec, found);
    }
    return found;
  };

  return {
    complete(spec, job, token, c) {
      const runId = job.id!;
      const k = agentKeys(spec);
      const hasWaiters = c.finished !== undefined && canHaveWaiters(runId);
      const run = hasWaiters ? [runDoneKey(keys, runId), runWaitersKey(keys, runId)] : noRun;
      const lastRun = c.finished !== undefined && c.record.outcome !== 'skipped' ? `${runId}|${c.finished}` : '';
      const { outcome } = c.record;
      const touchesCircuit = outcome === 'failure' || (c.isTrial && outcome !== 'skipped');
      const now = touchesCircuit ? clock() : 0;
      const causes = c.skipCauses ?? [];
      return connection.werkpilotCompleteRun(
        keys.bull(QUEUE_NAMES.agents, `${runId}:lock`),
        ...k.head,
        ...run,
        ...k.tail,
        token ?? '',
        runId,
        ...recordArgs(c.record, lastRun),
        c.finished ?? '',
        hasWaiters ? '1' : '0',
        WAIT_TTL_SECONDS,
        c.holdsLease ? '1' : '0',
        k.leaseTtl,
        k.priority,
        touchesCircuit ? '1' : '0',
        now,
        windowMs,
        spec.maxRestartsPerHour,
        touchesCircuit ? restartMember(now) : '',
        spec.name,
        touchesCircuit ? new Date(now).toISOString() : '',
        keys.eventsChannel,
        history,
        causes.length,
        ...causes,
        ...c.events,
      );
    },
  };
}
