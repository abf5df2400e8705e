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
 * KEYS: 1 gate epoch, 2 lease, 3 lease waiters, 4 circuit, 5 restarts, 6 events stream, 7 BullMQ
 *       completed, 8 BullMQ failed, 9 legacy last-run hash, 10 pending counters,
 *       then per dependency: its run's done marker, waiters hash, job hash, stats hash.
 * ARGV: 1 '1' to check the epoch, 2 the epoch the gate was evaluated at, 3 run id, 4 '1' when the
 *       gate skips the run, 5 overlap ('skip' | 'queue'), 6 lease ttl ms, 7 '1' when the run was
 *       parked before, 8 '1' when its circuit is not closed, 9 now, 10 window ms, 11 max restarts,
 *       12 cooldown ms ('' = window rule), 13 trial stale after ms, 14 channel, 15 history length,
 *       16 the `agent:started` event, then per dependency: its run id ('' none), its agent.
 * Invariants: the gate is judged on the state current at this instant (epoch); one overlap lease
 * holder; at most one half-open trial; nothing is written unless the run starts.
 * Returns { 'stale', epoch } | { 'gate' } | { 'dependencies', problems } | { 'pending', n } |
 *         { 'circuit', 'open' | 'busy' } | { 'overlap', lease ms left } | { 'run', 1 if trial }.
 */
const ADMIT_LUA = `${BUS_EMIT_LUA}${PROMOTE_PARKED_LUA}${DEPENDENCY_STATUS_LUA}${CIRCUIT_LUA}${LEASE_LUA}
if ARGV[1] == '1' then
  local epoch = redis.call('GET', KEYS[1]) or ''
  if epoch ~= ARGV[2] then return { 'stale', epoch } end
end
if ARGV[4] == '1' then return { 'gate' } end
local runId = ARGV[3]
local n = (#KEYS - 10) / 4
if n > 0 then
  local pending, problems = dependencyStatus(KEYS[7], KEYS[8], KEYS[9], dependencyList(11, 17, n))
  if #problems > 0 then return { 'dependencies', problems } end
  if #pending > 0 then return { 'pending', #pending } end
end
local now = tonumber(ARGV[9])
local c = { circuit = KEYS[4], restarts = KEYS[5], epoch = KEYS[1] }
local decision = 'closed'
if ARGV[8] == '1' then
  decision = circuitDecision(c, runId, now, tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[13]))
  if decision == 'open' or decision == 'busy' then return { 'circuit', decision } end
end
local wasParked = ARGV[7] == '1'
if not leaseTake(KEYS[2], KEYS[3], runId, ARGV[6], wasParked) then
  if ARGV[5] == 'queue' then return { 'overlap', redis.call('PTTL', KEYS[2]) } end
  return { 'overlap', 0 }
end
if decision == 'claim' then claimTrial(c, runId, now) end
if wasParked and n > 0 then redis.call('HDEL', KEYS[10], runId) end
emitJson(KEYS[6], ARGV[14], ARGV[15], ARGV[16])
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

  const bull = (suffix: string) => keys.bull(QUEUE_NAMES.agents, suffix);
  const fixedKeys = [bull('completed'), bull('failed'), legacyLastRunKey(keys), pendingCountsKey(keys)];
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
        const scriptKeys = [keys.gateEpoch, a.lease, a.leaseWaiters, a.circuit, a.restarts, keys.eventsStream, ...fixedKeys];
        const argv: (string | number)[] = [
          attempt < MAX_STALE_RETRIES ? '1' : '0',
          cache.epoch,
          runId,
          reasons.length > 0 ? '1' : '0',
          spec.overlap,
          a.leaseTtl,
          wasParked ? '1' : '0',
          cache.of(spec.name).circuit === 'closed' ? '0' : '1',
          clock(),
          circuit.windowMs,
          spec.maxRestartsPerHour,
          cooldown,
          a.staleAfter,
          keys.eventsChannel,
          historyLength,
          startedEvent,
        ];
        if (deps) {
          scriptKeys.push(...deps.keys);
          argv.push(...deps.argv);
        }
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
            if (reply[1] === 1) log.info({ agent: spec.name, runId }, 'circuit half-open: trial run');
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
