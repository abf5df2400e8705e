import { DelayedError, type Job } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from './agent.js';
import { BUS_EMIT_LUA } from './bus.js';
import {
  CIRCUIT_LUA,
  CIRCUIT_OPEN_REASON,
  CIRCUIT_TRIAL_BUSY_REASON,
  RESTART_WINDOW_MS,
  circuitKey,
  restartsKey,
  trialStaleAfterMs,
  type CircuitSettings,
} from './circuit-breaker.js';
import {
  DEPENDENCY_STATUS_LUA,
  DependencyWaits,
  PARKED_RECHECK_MS,
  dependencyArgs,
  dependencyRunsOf,
  describeDependencyProblems,
  legacyLastRunKey,
  pendingCountsKey,
  type FinishedOutcome,
} from './dependency-waits.js';
import { GateCache } from './gate-cache.js';
import { createRunGate, type GateRule } from './gating.js';
import type { Keys } from './keys.js';
import { LEASE_LUA, OverlapGuard, leaseKey, leaseTtlMs, leaseWaitersKey } from './overlap.js';
import { PROMOTE_PARKED_LUA } from './parked-runs.js';
import { QUEUE_NAMES, type RunJobData } from './queues.js';
import { markAgentsChanged } from './snapshot-changes.js';
import { createWriteBatcher } from './write-batching.js';

/**
 * Everything asked before a run starts, in one script (ADMIT_LUA, one round trip): is the gate
 * state the worker evaluated still current, are the dependency runs of its tick or pipeline done,
 * is its own circuit open or its trial taken, is the agent's overlap lease free — and if the run may
 * start, take the lease and the half-open trial and publish `agent:started`. It takes nothing it
 * would have to give back: every check comes before the first write, so a run that is skipped or
 * must wait leaves no trace.
 *
 * A run that must wait (a dependency run of its tick still pending, or its `overlap: 'queue'` agent
 * busy) is parked: `job.moveToDelayed` (BullMQ's, on its connection) and then one registration call
 * that promotes it at once should the wait have ended meanwhile; it then throws BullMQ's
 * DelayedError. Pipelines create their dependents parked, so they never take this path.
 */

/** What admission decided for a run it did not park. */
export type Admission = { kind: 'run'; isTrial: boolean } | { kind: 'skip'; reasons: string[] };

export interface RunAdmission {
  /**
   * Admits run `job` of `spec`, publishing `startedEvent` (the event's JSON) if it starts. Throws
   * BullMQ's DelayedError after parking the job, which the processor must let through untouched.
   */
  admit(spec: AgentSpec, job: Job<RunJobData>, token: string | undefined, startedEvent: string): Promise<Admission>;
  /** Finishes a run that ended without the run path (BullMQ failed it by itself): promotes its waiting dependents. */
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
 * KEYS: 1 gate epoch, 2 lease, 3 lease waiters, 4 events stream; then, if flags has 'C' (its circuit
 *       is not closed), circuit and restarts; if it has dependencies, BullMQ completed, BullMQ
 *       failed, the legacy last-run hash, the pending counters, and per dependency its run's done
 *       marker, waiters hash, job hash and its agent's stats hash.
 * ARGV: 1 flags ('E' check the epoch, 'G' the gate skips the run, 'Q' overlap 'queue', 'P' the run
 *       was parked before, 'C'), 2 the epoch the gate was evaluated at, 3 run id, 4 lease ttl ms,
 *       5 channel, 6 history length, 7 the `agent:started` event; then, if 'C': now, window ms, max
 *       restarts, cooldown ms ('' = window rule), trial stale after ms; then per dependency: its
 *       run id ('' none), its agent.
 * Invariants: the gate is judged on the state current at this instant (epoch); one overlap lease
 * holder; at most one half-open trial; nothing is written unless the run starts.
 * Returns { 'stale', epoch } | { 'gate' } | { 'dependencies', problems } | { 'pending', n } |
 *         { 'circuit', 'open' | 'busy' } | { 'overlap', lease ms left } | { 'run', 1 if trial }.
 */
const ADMIT_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${DEPENDENCY_STATUS_LUA}${CIRCUIT_LUA}${LEASE_LUA}
local flags = ARGV[1]
local function has(flag) return string.find(flags, flag, 1, true) ~= nil end
if has('E') then
  local epoch = redis.call('GET', KEYS[1]) or ''
  if epoch ~= ARGV[2] then return { 'stale', epoch } end
end
if has('G') then return { 'gate' } end
local runId = ARGV[3]
local k, a = 5, 8
local c, circuitArgs
if has('C') then
  c = { circuit = KEYS[5], restarts = KEYS[6], epoch = KEYS[1] }
  circuitArgs = a
  k, a = 7, 13
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
if not leaseTake(KEYS[2], KEYS[3], runId, ARGV[4], wasParked) then
  if has('Q') then return { 'overlap', redis.call('PTTL', KEYS[2]) } end
  return { 'overlap', 0 }
end
if decision == 'claim' then claimTrial(c, runId, tonumber(ARGV[circuitArgs])) end
if wasParked and pendingKey then redis.call('HDEL', pendingKey, runId) end
emitJson(KEYS[4], ARGV[5], ARGV[6], ARGV[7])
if decision == 'claim' or decision == 'trial' then return { 'run', 1 } end
return { 'run', 0 }
`;

type AdmitReply = ['stale', string] | ['gate'] | ['dependencies', string[]] | ['pending', number] | ['circuit', 'open' | 'busy'] | ['overlap', number] | ['run', number];

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
  lease: string;
  leaseWaiters: string;
  circuit: string;
  restarts: string;
  leaseTtl: number;
  staleAfter: number;
}

export function createRunAdmission(options: RunAdmissionOptions): RunAdmission {
  const { redis, keys, log } = options;
  const clock = options.clock ?? Date.now;
  const recheckMs = options.recheckMs ?? PARKED_RECHECK_MS;
  const lockDurationMs = options.lockDurationMs ?? 30_000;
  const historyLength = String(options.historyLength ?? options.circuit?.historyLength ?? 1000);
  const circuit = options.circuit ?? { windowMs: RESTART_WINDOW_MS, cooldownMs: undefined, clock, historyLength: 1000 };
  const cooldown = circuit.cooldownMs === undefined ? '' : String(circuit.cooldownMs);
  const gate = createRunGate({ rules: options.rules ?? [] });
  const cache = new GateCache({ redis, keys, clock, ...(options.gateMaxAgeMs !== undefined ? { maxAgeMs: options.gateMaxAgeMs } : {}) });
  const waits = new DependencyWaits({ redis, keys });
  const overlap = new OverlapGuard({ redis, keys });
  if (typeof (redis as Partial<Redis>).werkpilotAdmitRun !== 'function') redis.defineCommand('werkpilotAdmitRun', { lua: ADMIT_LUA });
  // Runs whose jobs arrived together are admitted in one socket write.
  const holdWrites = createWriteBatcher(redis);

  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const dependencyKeys = [bull('completed'), bull('failed'), legacyLastRunKey(keys), pendingCountsKey(keys)];
  const argsOf = new Map<AgentSpec, AgentArgs>();
  const agentArgs = (spec: AgentSpec): AgentArgs => {
    let args = argsOf.get(spec);
    if (!args) {
      args = {
        gateAgents: [spec.name, ...spec.dependsOn],
        lease: leaseKey(keys, spec.name),
        leaseWaiters: leaseWaitersKey(keys, spec.name),
        circuit: circuitKey(keys, spec.name),
        restarts: restartsKey(keys, spec.name),
        leaseTtl: leaseTtlMs(spec.timeoutMs, lockDurationMs),
        staleAfter: trialStaleAfterMs(spec),
      };
      argsOf.set(spec, args);
    }
    return args;
  };

  const park = async (job: Job<RunJobData>, token: string | undefined, deadline: number, register: () => Promise<unknown>): Promise<never> => {
    if (!token) throw new Error(`run ${job.id} must wait but has no lock token to park with`);
    await job.moveToDelayed(deadline, token);
    await register();
    throw new DelayedError();
  };

  return {
    async admit(spec, job, token, startedEvent) {
      const runId = job.id!;
      const a = agentArgs(spec);
      const dependencies = dependencyRunsOf(spec, job);
      const deps = dependencies.length > 0 ? dependencyArgs(keys, dependencies) : undefined;
      // The delay field stays set on a run promoted by our scripts (parked-runs.ts), and a run handed back or recovered has started before.
      const wasParked = job.delay > 0 || job.attemptsStarted > job.attemptsMade + 1;
      for (let attempt = 0; ; attempt++) {
        if (!cache.has(a.gateAgents)) await cache.load(a.gateAgents);
        const reasons = gate({ spec, job, view: cache });
        const isCircuitClosed = cache.of(spec.name).circuit === 'closed';
        let flags = attempt < MAX_STALE_RETRIES ? 'E' : '';
        if (reasons.length > 0) flags += 'G';
        if (spec.overlap === 'queue') flags += 'Q';
        if (wasParked) flags += 'P';
        if (!isCircuitClosed) flags += 'C';
        const scriptKeys = [keys.gateEpoch, a.lease, a.leaseWaiters, keys.eventsStream];
        const argv: (string | number)[] = [flags, cache.epoch, runId, a.leaseTtl, keys.eventsChannel, historyLength, startedEvent];
        if (!isCircuitClosed) {
          scriptKeys.push(a.circuit, a.restarts);
          argv.push(clock(), circuit.windowMs, spec.maxRestartsPerHour, cooldown, a.staleAfter);
        }
        if (deps) {
          scriptKeys.push(...dependencyKeys, ...deps.keys);
          argv.push(...deps.argv);
        }
        holdWrites();
        const reply = await redis.werkpilotAdmitRun(scriptKeys.length, ...scriptKeys, ...argv);
        switch (reply[0]) {
          case 'stale':
            cache.invalidate(reply[1]);
            continue;
          case 'gate':
            return { kind: 'skip', reasons };
          case 'dependencies':
            return { kind: 'skip', reasons: describeDependencyProblems(reply[1]) };
          case 'pending':
            log.debug({ agent: spec.name, runId, pending: reply[1] }, 'waiting for dependency runs');
            return park(job, token, clock() + recheckMs, () => waits.registerParked(runId, job.priority, dependencies));
          case 'circuit':
            return { kind: 'skip', reasons: [reply[1] === 'open' ? CIRCUIT_OPEN_REASON : CIRCUIT_TRIAL_BUSY_REASON] };
          case 'overlap':
            if (spec.overlap === 'skip') return { kind: 'skip', reasons: ['overlap'] };
            log.debug({ agent: spec.name, runId }, 'queued behind the running run of the same agent');
            return park(job, token, clock() + Math.min(Math.max(0, reply[1]) + 100, recheckMs), () => overlap.registerParked(spec.name, runId, job.priority));
          case 'run':
            if (reply[1] === 1) {
              log.info({ agent: spec.name, runId }, 'circuit half-open: trial run');
              // open → half-open happens here, not in a run's completion: the metrics snapshot hears of it (rare, off the common path).
              markAgentsChanged({ redis, keys }, [spec.name]).catch((err: unknown) => log.warn({ err }, 'could not mark the agent changed for the metrics snapshot'));
            }
            return { kind: 'run', isTrial: reply[1] === 1 };
        }
      }
    },

    async finish(spec, job, outcome) {
      await waits.finish(spec.name, job.id!, outcome);
    },

    close: async () => undefined,
  };
}
