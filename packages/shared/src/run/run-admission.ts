import { DelayedError, type Job } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec, LimiterDefinition } from '../agents/agent.js';
import { SLOTS_LUA, controlKeyValue, luaSlotMode, slotGroupOf, type SlotGroup } from './concurrency-slots.js';
import { BUS_EMIT_LUA, BUS_HISTORY_LENGTH } from '../messaging/bus.js';
import { CIRCUIT_LUA, CIRCUIT_OPEN_REASON, CIRCUIT_TRIAL_BUSY_REASON, RESTART_WINDOW_MS, trialStaleAfterMs, type CircuitSettings } from '../self-healing/circuit-breaker.js';
import { DEPENDENCY_STATUS_LUA, DependencyWaits, PARKED_RECHECK_MS, dependencyArgs, dependencyRunsOf, describeDependencyProblems, type FinishedOutcome } from './dependency-waits.js';
import { GateCache } from './gate-cache.js';
import { createRunGate, type GateRule } from './gating.js';
import { circuitKey, type Keys, legacyLastRunKey, pendingCountsKey, rateWaitingKey, restartsKey } from '../redis/keys.js';
import { LEASE_LUA, OverlapGuard, leaseTtlMs } from './overlap.js';
import { PROMOTE_PARKED_LUA, promoteParkedRun } from './parked-runs.js';
import { RATE_LUA, rateBucketsOf, type RateBucket } from './rate-limits.js';
import type { CatchUpDecision } from '../queues/tick-runs.js';
import { QUEUE_NAMES, type RunJobData } from '../queues/queues.js';
import { markAgentsChanged } from '../observability/snapshot-changes.js';
import { createWriteBatcher } from '../redis/write-batching.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { skipReason, type SkipReason } from './skip-reasons.js';

/**
 * Everything asked before a run starts, in one script (ADMIT_LUA, one round trip): is the gate
 * state the worker evaluated still current, are the dependency runs of its tick or pipeline done,
 * is its own circuit open or its trial taken, is a concurrency slot of its agent (and key value)
 * free, are its rate-limit tokens free — and if the run may start, take the slot, the tokens and the
 * half-open trial and publish `agent:started`. Every check that can skip the run or make it wait
 * for another run comes before the first write, so such a run leaves no trace; only a run that
 * waits for its tokens keeps its slot and books them (rate-limits.ts).
 *
 * A run that must wait (a dependency run of its tick still pending, its agent's slots busy under
 * `queue`, `bufferOne` or `cancelOther`, or its tokens due later) is parked: `job.moveToDelayed`
 * (BullMQ's, on its connection) and, when it waits for another run, one registration call that
 * promotes it at once should the wait have ended meanwhile; it then throws BullMQ's DelayedError.
 * A run waiting for tokens is promoted by this worker's timer when they are due. Pipelines create
 * their dependents parked, so they never take this path.
 */

/** What admission decided for a run it did not park. `slot`: the slot group the run holds (run) or may hold (skip of a parked run). */
export type Admission = { kind: 'run'; isTrial: boolean; slot: SlotGroup | undefined } | { kind: 'skip'; reasons: SkipReason[]; slot: SlotGroup | undefined };

/** Sends a cancel to the run holding a slot (`cancelOther`): the run that wants its slot, and why. */
export type CancelHolder = (runId: string, reason: string) => void;

export interface RunAdmission {
  /**
   * Admits run `job` of `spec`, publishing `startedEvent` (the event's JSON) if it starts. Throws
   * BullMQ's DelayedError after parking the job, which the processor must let through untouched.
   */
  admit(spec: AgentSpec, job: Job<RunJobData>, token: string | undefined, startedEvent: string): Promise<Admission>;
  /** Finishes a run that ended without the run path (BullMQ failed it by itself): promotes its waiting dependents and releases the slot it held. */
  finish(spec: AgentSpec, job: Job<RunJobData>, outcome: FinishedOutcome): Promise<void>;
  close(): Promise<void>;
}

export interface RunAdmissionOptions {
  /** Our command connection. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** The gate's rules (gating.ts); none: only the agent's own circuit and the admission checks. */
  rules?: readonly GateRule[];
  /** The breaker whose rules the agent's own circuit follows (its window and cooldown). */
  circuit?: CircuitSettings;
  /** Shared limiters by name (Registry.limiters); runs of agents listing one take its tokens. */
  limiters?: ReadonlyMap<string, LimiterDefinition>;
  /** How a `cancelOther` run asks for the running one to be cancelled (run-cancel.ts's sendCancel); none: it only waits. */
  cancelHolder?: CancelHolder;
  /** The catch-up policy (tick-runs.ts createCatchUp), asked first for the cron runs of agents whose `catchUp` is not `latest`. */
  catchUp?: (spec: AgentSpec, job: Job<RunJobData>) => Promise<CatchUpDecision>;
  /** Told of each run parked for its rate-limit tokens (the `agent:rate-limited` event), once per booking. */
  onRateLimited?: (spec: AgentSpec, job: Job<RunJobData>, waitMs: number, limiter: string) => void;
  /** The worker's LOCK_DURATION_MS, which the lease's TTL must outlast (see leaseTtlMs). Default 30000. */
  lockDurationMs?: number;
  /** Safety deadline of a parked run: it re-checks by itself after this, should no promotion come. */
  recheckMs?: number;
  /** How long the gate cache keeps an entry at most (GateCacheOptions.maxAgeMs). */
  gateMaxAgeMs?: number;
  historyLength?: number;
  clock?: () => number;
}

/**
 * Laid out so that a run pays only for what its admission asks (each argument costs both this
 * process and Redis): fixed keys and values, then optional groups named by `flags`.
 * KEYS: 1 gate epoch, 2 slot holders (the lease, or the slots' sorted set), 3 their waiters,
 *       4 events stream; then, if flags has 'C' (its circuit is not closed), circuit and restarts;
 *       if 'I' (a keyed agent), its running and waiting indexes; if 'R' (rate limits), its stats
 *       hash, its rate-waiting index and each limiter's log; if it has dependencies, BullMQ
 *       completed, BullMQ failed, the legacy last-run hash, the pending counters, and per dependency
 *       its run's done marker, waiters hash, job hash and its agent's stats hash.
 * ARGV: 1 flags ('E' check the epoch, 'G' the gate skips the run, 'Q' / 'B' / 'X' overlap queue /
 *       bufferOne / cancelOther, 'P' the run was parked before, 'C', 'I', 'R'), 2 the epoch the gate
 *       was evaluated at, 3 run id, 4 slot hold ttl ms, 5 channel, 6 history length, 7 the
 *       `agent:started` event, 8 slot mode ('L' lease, 'Z' slots, '' none: allowAll), 9 limit;
 *       then, if 'C': now, window ms, max restarts, cooldown ms ('' = window rule), trial stale
 *       after ms; if 'R': token member, how many limiters, the grace ms (tokens due sooner are
 *       waited for in the worker slot, not parked for), and per limiter max, window ms, cost,
 *       label, '1' if its log expires; then per dependency: its run id ('' none), its agent.
 * Invariants: the gate is judged on the state current at this instant (epoch); at most `limit`
 * slot holders; at most one half-open trial; at most `max` tokens per window of every limiter;
 * nothing is written unless the run starts or waits for its tokens (then: its slot and tokens).
 * Returns { 'stale', epoch } | { 'gate' } | { 'dependencies', problems } | { 'pending', n } |
 *         { 'circuit', 'open' | 'busy' } | { 'overlap', lease ms left, victim } | { 'full' } |
 *         { 'rate', ms until its tokens, limiter } | { 'run', 1 if trial, ms until its tokens (within the grace) }.
 */
const ADMIT_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${DEPENDENCY_STATUS_LUA}${CIRCUIT_LUA}${LEASE_LUA}${SLOTS_LUA}${RATE_LUA}
local flags = ARGV[1]
local function has(flag) return string.find(flags, flag, 1, true) ~= nil end
if has('E') then
  local epoch = redis.call('GET', KEYS[1]) or ''
  if epoch ~= ARGV[2] then return { 'stale', epoch } end
end
if has('G') then return { 'gate' } end
local runId, mode = ARGV[3], ARGV[8]
local k, a = 5, 10
local c, circuitArgs
if has('C') then
  c = { circuit = KEYS[k], restarts = KEYS[k + 1], epoch = KEYS[1] }
  circuitArgs = a
  k, a = k + 2, a + 5
end
local idx
if has('I') then
  idx = { running = KEYS[k], waiting = KEYS[k + 1] }
  k = k + 2
end
local rate
if has('R') then
  local n = tonumber(ARGV[a + 1])
  rate = { stats = KEYS[k], waiting = KEYS[k + 1], member = ARGV[a], grace = tonumber(ARGV[a + 2]), buckets = {} }
  for i = 0, n - 1 do
    local b = a + 3 + i * 5
    rate.buckets[#rate.buckets + 1] = { key = KEYS[k + 2 + i], max = tonumber(ARGV[b]), window = tonumber(ARGV[b + 1]),
      cost = tonumber(ARGV[b + 2]), label = ARGV[b + 3], expires = ARGV[b + 4] == '1' }
  end
  k, a = k + 2 + n, a + 3 + n * 5
end
local pendingKey
if #KEYS >= k then
  pendingKey = KEYS[k + 3]
  local pending, problems = dependencyStatus(KEYS[k], KEYS[k + 1], KEYS[k + 2], dependencyList(k + 4, a, (#KEYS - k - 3) / 4))
  if #problems > 0 then return { 'dependencies', problems } end
  if #pending > 0 then return { 'pending', #pending } end
end
local decision = 'closed'
if c then
  decision = circuitDecision(c, runId, tonumber(ARGV[circuitArgs]), tonumber(ARGV[circuitArgs + 1]), tonumber(ARGV[circuitArgs + 2]),
    ARGV[circuitArgs + 3], tonumber(ARGV[circuitArgs + 4]))
  if decision == 'open' or decision == 'busy' then return { 'circuit', decision } end
end
local wasParked = has('P')
if mode ~= '' then
  if not slotTake(mode, KEYS[2], KEYS[3], runId, ARGV[4], ARGV[9], wasParked) then
    local onlyOne = has('B') or has('X')
    if onlyOne then
      local first = redis.call('LINDEX', KEYS[3], 0)
      if first and first ~= runId then return { 'full' } end
    end
    if not (onlyOne or has('Q')) then return { 'overlap', 0, '' } end
    local left = 0
    if mode == 'L' then left = redis.call('PTTL', KEYS[2]) end
    local victim = ''
    if has('X') then victim = slotOldest(mode, KEYS[2]) or '' end
    return { 'overlap', left, victim }
  end
  if idx then
    redis.call('ZADD', idx.running, nowMs() + tonumber(ARGV[4]), runId)
    if wasParked then redis.call('ZREM', idx.waiting, runId) end
  end
end
local startDelay = 0
if rate then
  local now = nowMs()
  local at, booked, label = now, false, ''
  if wasParked then
    local s = redis.call('ZSCORE', rate.buckets[1].key, rate.member .. '#1')
    if s then at, booked = tonumber(s), true end
  end
  if not booked then
    for _, b in ipairs(rate.buckets) do
      local t = rateEarliest(b.key, now, b.max, b.window, b.cost)
      if t > at then at, label = t, b.label end
    end
    for _, b in ipairs(rate.buckets) do rateBook(b.key, at, now, b.window, rate.member, b.cost, b.expires) end
    if at > now then redis.call('HINCRBY', rate.stats, 'rateLimited', 1) end
  end
  if at - now > rate.grace then
    if not booked then
      redis.call('ZADD', rate.waiting, at, runId)
      -- The slot is kept while the run waits for its tokens: its hold must outlast the wait.
      local untilMs = at + tonumber(ARGV[4])
      if mode == 'L' then redis.call('PEXPIRE', KEYS[2], untilMs - now, 'GT')
      elseif mode == 'Z' then
        redis.call('ZADD', KEYS[2], 'XX', untilMs, runId)
        redis.call('PEXPIRE', KEYS[2], untilMs - now, 'GT')
      end
      if idx then redis.call('ZADD', idx.running, 'XX', untilMs, runId) end
    end
    return { 'rate', at - now, label }
  end
  -- Due within the grace: the run starts once they are, waiting that long in its worker slot.
  if at > now then startDelay = at - now end
  if wasParked then redis.call('ZREM', rate.waiting, runId) end
end
if decision == 'claim' then claimTrial(c, runId, tonumber(ARGV[circuitArgs])) end
if wasParked and pendingKey then redis.call('HDEL', pendingKey, runId) end
emitJson(KEYS[4], ARGV[5], ARGV[6], ARGV[7])
if decision == 'claim' or decision == 'trial' then return { 'run', 1, startDelay } end
return { 'run', 0, startDelay }
`;

type AdmitReply =
  | ['stale', string]
  | ['gate']
  | ['dependencies', string[]]
  | ['pending', number]
  | ['circuit', 'open' | 'busy']
  | ['overlap', number, string]
  | ['full']
  | ['rate', number, string]
  | ['run', number, number];

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotAdmitRun(numKeys: number, ...args: (string | number)[]): Result<AdmitReply, Context>;
  }
}

/** After this many stale answers in a row (the gate state keeps changing), admit on the last state read. */
const MAX_STALE_RETRIES = 3;

/** Per agent, what every admission of its runs passes unchanged. */
interface AgentArgs {
  gateAgents: string[];
  circuit: string;
  restarts: string;
  leaseTtl: number;
  staleAfter: number;
  /** Its slot group when it has no concurrency key (the same for every run). */
  slot: SlotGroup | undefined;
  /** Overlap flag: 'Q', 'B', 'X' or ''. */
  policy: string;
  isKeyed: boolean;
  /** Its rate buckets when none is keyed (the same for every run); undefined without rate limits. */
  rate: RateBucket[] | undefined;
  hasRateLimits: boolean;
  stats: string;
  rateWaiting: string;
}

const POLICY_FLAGS: Record<AgentSpec['overlap'], string> = { skip: '', queue: 'Q', bufferOne: 'B', cancelOther: 'X', allowAll: '' };

/**
 * Tokens due within this long are waited for in the worker slot (the run starts the moment they are
 * due) rather than parked for: parking and promoting cost more round trips than that. A parked run
 * is promoted this long before its tokens are due, so it arrives at admission about on time.
 */
const TOKEN_GRACE_MS = 5;
const TOKEN_WAKE_EARLY_MS = 3;

/** A parked run waiting for another run re-checks after at most this long when it asked for a cancel (should the cancel not land). */
const CANCEL_RECHECK_MS = 2_000;

export function createRunAdmission(options: RunAdmissionOptions): RunAdmission {
  const { redis, keys, log } = options;
  const clock = options.clock ?? Date.now;
  const recheckMs = options.recheckMs ?? PARKED_RECHECK_MS;
  const lockDurationMs = options.lockDurationMs ?? 30_000;
  const historyLength = String(options.historyLength ?? options.circuit?.historyLength ?? BUS_HISTORY_LENGTH);
  const circuit = options.circuit ?? { windowMs: RESTART_WINDOW_MS, cooldownMs: undefined, clock, historyLength: BUS_HISTORY_LENGTH };
  const cooldown = circuit.cooldownMs === undefined ? '' : String(circuit.cooldownMs);
  const limiters = options.limiters ?? new Map<string, LimiterDefinition>();
  const gate = createRunGate({ rules: options.rules ?? [] });
  const cache = new GateCache({ redis, keys, clock, ...(options.gateMaxAgeMs !== undefined ? { maxAgeMs: options.gateMaxAgeMs } : {}) });
  const waits = new DependencyWaits({ redis, keys });
  const overlap = new OverlapGuard({ redis, keys });
  defineScripts(redis, { werkpilotAdmitRun: ADMIT_LUA });
  // Runs whose jobs arrived together are admitted in one socket write.
  const holdWrites = createWriteBatcher(redis);
  // Runs parked until their tokens are due, promoted by this process when they are (see rate-limits.ts).
  const wakeups = new Map<string, NodeJS.Timeout>();

  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const dependencyKeys = [bull('completed'), bull('failed'), legacyLastRunKey(keys), pendingCountsKey(keys)];
  const argsOf = new Map<AgentSpec, AgentArgs>();
  const agentArgs = (spec: AgentSpec): AgentArgs => {
    let args = argsOf.get(spec);
    if (!args) {
      const isKeyed = spec.concurrency.key !== undefined && spec.overlap !== 'allowAll';
      const hasRateLimits = spec.rateLimit !== undefined || spec.limiters.some((use) => use.cost > 0);
      args = {
        gateAgents: [spec.name, ...spec.dependsOn],
        circuit: circuitKey(keys, spec.name),
        restarts: restartsKey(keys, spec.name),
        leaseTtl: leaseTtlMs(spec.timeoutMs, lockDurationMs),
        staleAfter: trialStaleAfterMs(spec),
        slot: isKeyed ? undefined : slotGroupOf(keys, spec),
        policy: POLICY_FLAGS[spec.overlap],
        isKeyed,
        rate: hasRateLimits && !spec.rateLimit?.key ? rateBucketsOf(keys, spec, limiters) : undefined,
        hasRateLimits,
        stats: keys.agentStats(spec.name),
        rateWaiting: rateWaitingKey(keys, spec.name),
      };
      argsOf.set(spec, args);
    }
    return args;
  };

  const park = async (job: Job<RunJobData>, token: string | undefined, deadline: number, register?: () => Promise<unknown>): Promise<never> => {
    if (!token) throw new Error(`run ${job.id} must wait but has no lock token to park with`);
    await job.moveToDelayed(deadline, token);
    if (register) await register();
    throw new DelayedError();
  };

  /** Promotes run `runId` shortly before its tokens are due (see TOKEN_WAKE_EARLY_MS). */
  const wakeAt = (runId: string, priority: number, waitMs: number) => {
    clearTimeout(wakeups.get(runId));
    const timer = setTimeout(
      () => {
        wakeups.delete(runId);
        promoteParkedRun(redis, keys, runId, priority).catch((err: unknown) => log.warn({ err, runId }, 'could not promote a run whose tokens are due; BullMQ will at its delay'));
      },
      Math.max(0, waitMs - TOKEN_WAKE_EARLY_MS),
    );
    timer.unref();
    wakeups.set(runId, timer);
  };

  return {
    async admit(spec, job, token, startedEvent) {
      const runId = job.id!;
      const a = agentArgs(spec);
      // The delay field stays set on a run promoted by our scripts (parked-runs.ts), and a run handed back or recovered has started before.
      const wasParked = job.delay > 0 || job.attemptsStarted > job.attemptsMade + 1;
      // A tick is judged late when it first arrives, not after waiting its turn or its dependencies.
      if (spec.catchUp !== 'latest' && job.data.trigger === 'cron' && !wasParked && options.catchUp) {
        const caughtUp = await options.catchUp(spec, job);
        if (caughtUp.kind === 'skip') return { kind: 'skip', reasons: [skipReason(caughtUp.reason)], slot: undefined };
      }
      const data = job.data.data;
      // Throws ControlKeyError for a key function that fails on this run's data (the executor fails the run).
      const slot = a.isKeyed ? slotGroupOf(keys, spec, controlKeyValue(spec.concurrency.key, data, 'concurrency.key', spec.name)) : a.slot;
      const rate = a.rate ?? (a.hasRateLimits ? rateBucketsOf(keys, spec, limiters, controlKeyValue(spec.rateLimit?.key, data, 'rateLimit.key', spec.name)) : undefined);
      const dependencies = dependencyRunsOf(spec, job);
      const deps = dependencies.length > 0 ? dependencyArgs(keys, dependencies) : undefined;
      for (let attempt = 0; ; attempt++) {
        if (!cache.has(a.gateAgents)) await cache.load(a.gateAgents);
        const reasons = gate({ spec, job, view: cache });
        const isCircuitClosed = cache.of(spec.name).circuit === 'closed';
        let flags = attempt < MAX_STALE_RETRIES ? 'E' : '';
        if (reasons.length > 0) flags += 'G';
        flags += a.policy;
        if (wasParked) flags += 'P';
        if (!isCircuitClosed) flags += 'C';
        if (slot?.index) flags += 'I';
        if (rate) flags += 'R';
        const scriptKeys = [keys.gateEpoch, slot?.holders ?? keys.gateEpoch, slot?.waiters ?? keys.gateEpoch, keys.eventsStream];
        const argv: (string | number)[] = [
          flags,
          cache.epoch,
          runId,
          a.leaseTtl,
          keys.eventsChannel,
          historyLength,
          startedEvent,
          slot && slot.mode !== 'none' ? luaSlotMode(slot.mode) : '',
          slot?.limit ?? 0,
        ];
        if (!isCircuitClosed) {
          scriptKeys.push(a.circuit, a.restarts);
          argv.push(clock(), circuit.windowMs, spec.maxRestartsPerHour, cooldown, a.staleAfter);
        }
        if (slot?.index) scriptKeys.push(slot.index.running, slot.index.waiting);
        if (rate) {
          scriptKeys.push(a.stats, a.rateWaiting, ...rate.map((b) => b.key));
          argv.push(`${runId}:${job.attemptsMade}`, rate.length, TOKEN_GRACE_MS);
          for (const b of rate) argv.push(b.max, b.perMs, b.cost, b.label, b.expires ? '1' : '');
        }
        if (deps) {
          scriptKeys.push(...dependencyKeys, ...deps.keys);
          argv.push(...deps.argv);
        }
        holdWrites();
        // A wait for tokens is counted from the script's run, which is after this: a timer set from here is not late by the reply's trip.
        const sentAt = clock();
        const reply = await redis.werkpilotAdmitRun(scriptKeys.length, ...scriptKeys, ...argv);
        // A parked run that is skipped may hold the slot it was handed: its completion gives it back.
        const skipSlot = wasParked && slot?.mode !== 'none' ? slot : undefined;
        switch (reply[0]) {
          case 'stale':
            cache.invalidate(reply[1]);
            continue;
          case 'gate':
            return { kind: 'skip', reasons, slot: skipSlot };
          case 'dependencies':
            return { kind: 'skip', reasons: describeDependencyProblems(reply[1]), slot: skipSlot };
          case 'pending':
            log.debug({ agent: spec.name, runId, pending: reply[1] }, 'waiting for dependency runs');
            return park(job, token, clock() + recheckMs, () => waits.registerParked(runId, job.priority, dependencies));
          case 'circuit':
            return { kind: 'skip', reasons: [skipReason(reply[1] === 'open' ? CIRCUIT_OPEN_REASON : CIRCUIT_TRIAL_BUSY_REASON)], slot: skipSlot };
          case 'full':
            return { kind: 'skip', reasons: [overlapReason(spec, slot, 'a run already waits for its turn')], slot: skipSlot };
          case 'overlap': {
            if (spec.overlap === 'skip' || !slot) return { kind: 'skip', reasons: [overlapReason(spec, slot)], slot: skipSlot };
            const [, leaseMsLeft, victim] = reply;
            if (victim) options.cancelHolder?.(victim, `overlap: replaced by run ${runId}`);
            log.debug({ agent: spec.name, runId, victim: victim || undefined }, 'waiting for a concurrency slot of its agent');
            const wait = Math.min(Math.max(0, leaseMsLeft) + 100, victim ? CANCEL_RECHECK_MS : recheckMs);
            return park(job, token, clock() + wait, async () => {
              const answer = await overlap.registerParked(slot, runId, job.priority, spec.overlap === 'bufferOne' || spec.overlap === 'cancelOther');
              if (answer === 'full') log.debug({ agent: spec.name, runId }, 'another run already waits for its turn: this one is promoted to be skipped');
            });
          }
          case 'rate': {
            const [, waitMs, limiter] = reply;
            log.debug({ agent: spec.name, runId, waitMs, limiter }, 'waiting for rate-limit tokens');
            // A run woken early re-parks for the rest of its wait: its delay was told when it was booked.
            if (limiter !== '') options.onRateLimited?.(spec, job, waitMs, limiter);
            const due = sentAt + waitMs;
            return park(job, token, due, async () => wakeAt(runId, job.priority, Math.max(0, due - clock())));
          }
          case 'run':
            if (reply[1] === 1) {
              log.info({ agent: spec.name, runId }, 'circuit half-open: trial run');
              // open → half-open happens here, not in a run's completion: the metrics snapshot hears of it (rare, off the common path).
              markAgentsChanged({ redis, keys }, [spec.name]).catch((err: unknown) => log.warn({ err }, 'could not mark the agent changed for the metrics snapshot'));
            }
            // One millisecond more: Node's timers can fire up to 1 ms early against the clock
            // (libuv truncates its loop time to the millisecond), and a run must not start before
            // the time its tokens were granted for.
            if (reply[2] > 0) await new Promise((resolve) => setTimeout(resolve, reply[2] + 1));
            return { kind: 'run', isTrial: reply[1] === 1, slot: slot && slot.mode !== 'none' ? slot : undefined };
        }
      }
    },

    async finish(spec, job, outcome) {
      await waits.finish(spec.name, job.id!, outcome);
      // No completion script ran for this run (BullMQ failed it by itself, for stalling too often):
      // the slot it may hold goes to the next run now, not when its hold expires.
      const a = agentArgs(spec);
      let slot: SlotGroup | undefined;
      try {
        slot = a.isKeyed ? slotGroupOf(keys, spec, controlKeyValue(spec.concurrency.key, job.data.data, 'concurrency.key', spec.name)) : a.slot;
      } catch {
        return; // its key function fails on this run's data: it never took a slot
      }
      if (slot && slot.mode !== 'none') await overlap.release(slot, job.id!, a.leaseTtl, spec.priority);
    },

    close: async () => {
      for (const timer of wakeups.values()) clearTimeout(timer);
      wakeups.clear();
    },
  };
}

/** `overlap`, as before controls existed, for an agent with one slot and no key; else what was full. */
function overlapReason(spec: AgentSpec, slot: SlotGroup | undefined, why?: string): SkipReason {
  const limit = spec.concurrency.limit;
  const where = slot?.keyValue !== undefined ? ` for key "${slot.keyValue}"` : '';
  const detail = limit === 1 && where === '' ? '' : `: ${limit} running${where}`;
  return skipReason(why ? `overlap${detail}; ${why}` : `overlap${detail}`);
}
