import type { Job } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import { RECORD_RUN_LUA, recordArgs, type RunRecord } from '../self-healing/agent-state.js';
import { BUS_EMIT_LUA, BUS_HISTORY_LENGTH } from '../messaging/bus.js';
import { CIRCUIT_LUA, RESTART_WINDOW_MS, restartMember, type CircuitSettings } from '../self-healing/circuit-breaker.js';
import { FINISH_RUN_LUA, WAIT_TTL_SECONDS, canHaveWaiters, type FinishedOutcome } from './dependency-waits.js';
import { changeSequenceKey, changedAgentsKey, circuitKey, pendingCountsKey, restartsKey, runDoneKey, runWaitersKey, skipCausesKey, type Keys } from '../redis/keys.js';
import { SLOTS_LUA, luaSlotMode, type SlotGroup } from './concurrency-slots.js';
import { LEASE_LUA, leaseTtlMs } from './overlap.js';
import { PROMOTE_PARKED_LUA, parkedQueueKeys } from './parked-runs.js';
import { QUEUE_NAMES, type RunJobData } from '../queues/queues.js';
import { rollupTarget } from './run-rollups.js';
import { MARK_CHANGED_FN_LUA } from '../observability/snapshot-changes.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { createWriteBatcher } from '../redis/write-batching.js';

/**
 * Everything that happens when a run's attempt ends, in one script (COMPLETE_LUA): the agent's
 * counters, last-run fields, samples and exported figures; the circuit, only when it matters (a
 * failure, or the end of the half-open trial); the outcome's events; for a run that ended for good,
 * its finished marker and the promotion of the dependents waiting for it; the release of the
 * concurrency slot it holds (the agent's overlap lease, or one of its N slots, per key value) with
 * its hand-off to the next queued run; the agent's mark in the metrics snapshot's change feed
 * (snapshot-changes.ts); and the attempt in the agent's per-minute rollup (run-rollups.ts: one
 * HINCRBY, the agent page's charts).
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
  /**
   * The concurrency slot group this run holds (run admission said `run`), or may hold (a parked run
   * that was skipped: it may have been handed the slot); released if held, and handed on.
   */
  slot: SlotGroup | undefined;
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
   * when this copy no longer held the run's lock, so nothing was recorded. With `traceId` (tracing
   * on), the job's hash records it (TRACE_ID_FIELD).
   */
  complete(spec: AgentSpec, job: Job<RunJobData>, token: string | undefined, completion: Completion, traceId?: string): Promise<'ok' | 'fenced'>;
}

/**
 * The field of a run's BullMQ job hash holding the trace id of its last recorded attempt (tracing
 * on): `GET /api/runs/:id` shows it for every run, cron runs and failed ones included.
 */
export const TRACE_ID_FIELD = 'werkpilotTraceId';

/**
 * The arguments are laid out so that a run pays only for what its completion does (each argument
 * costs both this process and Redis): fixed keys and values, then optional groups named by `flags`.
 * KEYS: 1 the job's lock, 2 stats, 3 durations, 4 outcomes (read once, see agent-state.ts),
 *       5 events stream, 6 slot holders (lease or slots), 7 their waiters, 8..15 queue keys for
 *       promotions (parked-runs.ts), 16 change sequence, 17 changed agents (snapshot-changes.ts),
 *       18 the agent's rollup hash for the hour the attempt ended (run-rollups.ts);
 *       then, if flags has 'C', circuit, restarts, gate epoch; if 'W', the run's done marker, its
 *       waiters hash, the pending counters; if 'S', the skip causes hash; if 'T', the job's hash;
 *       if 'I', the keyed agent's running index (and, for a skipped run, its waiting index).
 * ARGV: 1 lock token ('' = unfenced), 2 run id, 3..10 the record (agent-state.ts recordArgs),
 *       11 finished outcome ('' = not finished), 12 flags ('L' holds the lease, 'Z' holds one of N
 *       slots, 'C', 'W', 'S', 'T' traced, 'I'), 13 slot hold ttl ms, 14 the agent's priority (for
 *       the hand-off), 15 channel, 16 history length, 17 the agent, 18 the rollup field; then, if 'C': now, window ms,
 *       max restarts, restart member, agent, at (ISO); if 'S': how many skip causes, and they; if
 *       'T': the attempt's trace id; then the events (JSON).
 * Invariants: only the attempt holding the job's lock records anything; one outcome per attempt;
 * each waiter promoted once; a slot released only by its holder and handed to one waiter.
 * Returns 'ok' or 'fenced'.
 */
const COMPLETE_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${RECORD_RUN_LUA}${CIRCUIT_LUA}${FINISH_RUN_LUA}${LEASE_LUA}${SLOTS_LUA}${MARK_CHANGED_FN_LUA}
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'fenced' end
local runId, outcome, finished, flags = ARGV[2], ARGV[3], ARGV[11], ARGV[12]
recordRun(KEYS[2], KEYS[3], KEYS[4], outcome, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
local ev = { stream = KEYS[5], channel = ARGV[15], maxlen = ARGV[16] }
redis.call('HINCRBY', KEYS[18], ARGV[18], 1)
local k, a = 19, 19
if string.find(flags, 'C', 1, true) then
  circuitRecord({ circuit = KEYS[k], restarts = KEYS[k + 1], epoch = KEYS[k + 2] }, ev, outcome, runId,
    tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
  k, a = k + 3, a + 6
end
local waits = string.find(flags, 'W', 1, true) and k
if waits then k = k + 3 end
if string.find(flags, 'S', 1, true) then
  for i = a + 1, a + tonumber(ARGV[a]) do redis.call('HINCRBY', KEYS[k], ARGV[i], 1) end
  k, a = k + 1, a + 1 + tonumber(ARGV[a])
end
if string.find(flags, 'T', 1, true) then
  redis.call('HSET', KEYS[k], '${TRACE_ID_FIELD}', ARGV[a])
  k, a = k + 1, a + 1
end
for i = a, #ARGV do emitJson(ev.stream, ev.channel, ev.maxlen, ARGV[i]) end
local q = slice(KEYS, 8, 15)
if waits then finishRun(KEYS[waits], KEYS[waits + 1], KEYS[waits + 2], q, finished, ${WAIT_TTL_SECONDS}) end
local mode = string.find(flags, 'L', 1, true) and 'L' or (string.find(flags, 'Z', 1, true) and 'Z')
if mode then
  slotRelease(mode, KEYS[6], KEYS[7], runId, ARGV[13], ARGV[14], q)
  -- A parked run skipped on waking (its agent disabled, a dependency dead-lettered, ...) gives up
  -- its place among the waiters: handed the slot later, it would never take it, and every run
  -- behind it would wait until the slot's hold expired.
  local skipped = outcome == 'skipped'
  if skipped then redis.call('LREM', KEYS[7], 0, runId) end
  if string.find(flags, 'I', 1, true) then
    redis.call('ZREM', KEYS[k], runId)
    if skipped then redis.call('ZREM', KEYS[k + 1], runId) end
  end
end
markChanged(KEYS[16], KEYS[17], ARGV[17])
return 'ok'
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotCompleteRun(numKeys: number, ...args: (string | number)[]): Result<'ok' | 'fenced', Context>;
  }
}

/** Per agent, the keys and figures every completion of its runs passes unchanged. */
interface AgentKeys {
  /** The keys before the slot group's (which may depend on the run's key value). */
  fixed: string[];
  circuit: string[];
  skipCauses: string;
  leaseTtl: number;
  priority: number;
}

export function createRunCompletion({ connection, keys, circuit, lockDurationMs = 30_000, historyLength }: RunCompletionOptions): RunCompletion {
  defineScripts(connection, { werkpilotCompleteRun: COMPLETE_LUA });
  const windowMs = circuit?.windowMs ?? RESTART_WINDOW_MS;
  const clock = circuit?.clock ?? Date.now;
  const history = historyLength ?? circuit?.historyLength ?? BUS_HISTORY_LENGTH;
  const queueKeys = parkedQueueKeys(keys);
  const pending = pendingCountsKey(keys);
  const byAgent = new Map<AgentSpec, AgentKeys>();
  const agentKeys = (spec: AgentSpec): AgentKeys => {
    let found = byAgent.get(spec);
    if (!found) {
      found = {
        fixed: [keys.agentStats(spec.name), keys.agentDurations(spec.name), keys.agentOutcomes(spec.name), keys.eventsStream],
        circuit: [circuitKey(keys, spec.name), restartsKey(keys, spec.name), keys.gateEpoch],
        skipCauses: skipCausesKey(keys, spec.name),
        leaseTtl: leaseTtlMs(spec.timeoutMs, lockDurationMs),
        priority: spec.priority,
      };
      byAgent.set(spec, found);
    }
    return found;
  };
  const holdWrites = createWriteBatcher(connection);
  const changeFeed = [changeSequenceKey(keys), changedAgentsKey(keys)];

  return {
    complete(spec, job, token, c, traceId) {
      // BullMQ's moveToFinished follows in this turn: both leave in one socket write.
      holdWrites();
      const runId = job.id!;
      const k = agentKeys(spec);
      const { outcome } = c.record;
      const lastRun = c.finished !== undefined && outcome !== 'skipped' ? `${runId}|${c.finished}` : '';
      const touchesCircuit = outcome === 'failure' || (c.isTrial && outcome !== 'skipped');
      const hasWaiters = c.finished !== undefined && canHaveWaiters(runId);
      const causes = c.skipCauses ?? [];
      const slot = c.slot;
      const rollup = rollupTarget(keys, c.record);
      const scriptKeys = [keys.bull(QUEUE_NAMES.agents, `${runId}:lock`), ...k.fixed, slot?.holders ?? k.fixed[0]!, slot?.waiters ?? k.fixed[0]!, ...queueKeys, ...changeFeed, rollup.key];
      let flags = slot ? luaSlotMode(slot.mode) : '';
      const argv: (string | number)[] = [token ?? '', runId, ...recordArgs(c.record, lastRun), c.finished ?? ''];
      const optional: (string | number)[] = [];
      if (touchesCircuit) {
        flags += 'C';
        scriptKeys.push(...k.circuit);
        const now = clock();
        optional.push(now, windowMs, spec.maxRestartsPerHour, restartMember(now), spec.name, new Date(now).toISOString());
      }
      if (hasWaiters) {
        flags += 'W';
        scriptKeys.push(runDoneKey(keys, runId), runWaitersKey(keys, runId), pending);
      }
      if (causes.length > 0) {
        flags += 'S';
        scriptKeys.push(k.skipCauses);
        optional.push(causes.length, ...causes);
      }
      if (traceId !== undefined) {
        flags += 'T';
        scriptKeys.push(keys.bull(QUEUE_NAMES.agents, runId));
        optional.push(traceId);
      }
      if (slot?.index) {
        flags += 'I';
        scriptKeys.push(slot.index.running);
        if (outcome === 'skipped') scriptKeys.push(slot.index.waiting);
      }
      argv.push(flags, k.leaseTtl, k.priority, keys.eventsChannel, history, spec.name, rollup.field, ...optional, ...c.events);
      return connection.werkpilotCompleteRun(scriptKeys.length, ...scriptKeys, ...argv);
    },
  };
}
