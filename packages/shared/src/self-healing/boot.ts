import { QueueEvents, type Queue } from 'bullmq';
import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import type { EventBus } from '../messaging/bus.js';
import { NotLeaderError } from '../process/errors.js';
import { dependencyRule, type GateRule } from '../run/gating.js';
import { createHealthCheckHandler } from './health-check-handler.js';
import { runCheckOnWorker } from './worker-check-job.js';
import { bootKey, type Keys, leaderKey, snapshotGenerationsKey } from '../redis/keys.js';
import type { LeaderFence } from '../process/leader.js';
import type { Registry } from '../agents/registry.js';
import type { SystemJobHandler } from '../queues/system-worker.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { dependencySkipReason, joinSkipReasons, splitSkipReasons, uniqueSkipReasons, type SkipReason } from '../run/skip-reasons.js';
import { duplicateRedisConnection } from '../redis/redis-connection.js';

/**
 * Layered boot (the predecessor's "4-layer dependency boot", any number of layers): layer k holds
 * the agents of dependency depth k. Each agent of a layer gets a `boot-check` job on the `system`
 * queue, where a worker runs its `healthCheck` with a timeout; layer k+1 starts once every check of
 * layer k has answered. An agent whose healthCheck fails (or throws, or times out) has `failed`
 * boot; every transitive dependent is `blocked` with the root cause
 * (`dependency crm-sync failed boot: <reason>`), gets no check, and its runs are skipped with that
 * reason. An agent no worker checked in time is `unchecked` (it blocks nothing: a scheduler that
 * starts before its workers must not block the whole graph).
 *
 * A failed boot heals: the leader re-checks failed and unchecked agents with backoff, and any agent
 * on demand (boot-healer.ts); a blocked agent is checked as soon as what blocked it passes.
 *
 * State lives in one Redis hash (agent → JSON), shown in /api/metrics as `agents.<name>.boot`. Only
 * the leader writes it, each write fenced by the leader lease inside its script, so a deposed or
 * paused leader's boot cannot overwrite the new leader's verdicts. Events: `boot:layer` per layer,
 * `boot:agent` per agent outcome.
 */

export const BOOT_CHECK_JOB = 'boot-check';

export type BootStatus = 'checking' | 'ok' | 'failed' | 'blocked' | 'unchecked';

export interface AgentBootState {
  status: BootStatus;
  layer: number;
  reason?: string;
  /** When this agent's boot outcome was decided (ISO-8601, the leader's clock). */
  at: string;
  durationMs?: number;
  /** Checks in a row that did not pass (failed or unchecked); the next is due at `nextCheckAt`. */
  failedChecks?: number;
  nextCheckAt?: string;
  /** The last on-demand request (`POST /api/agents/:name/boot`) this state answers. */
  requestSeq?: number;
}

export interface BootReport {
  bootId: string;
  layers: { layer: number; agents: string[]; durationMs: number }[];
  agents: Record<string, AgentBootState>;
  durationMs: number;
}

export interface BootDeps {
  /** The `system` queue. */
  systemQueue: Queue;
  registry: Registry;
  redis: Redis;
  keys: Keys;
  bus: EventBus;
  log: Logger;
  /** How long an agent's healthCheck may take on the worker. Default 10 s. */
  checkTimeoutMs?: number;
  /** How long to wait for some worker to take a check before calling the agent `unchecked`. Default 60 s. */
  pickupTimeoutMs?: number;
  /** First re-check of a failed or unchecked agent after this; doubling up to `BOOT_RECHECK_MAX_MS`. Default 5 s. */
  recheckBaseMs?: number;
  /** The leader lease every write is fenced by; none writes unfenced (tests, a single process). */
  fence?: LeaderFence;
  clock?: () => number;
}

/** The longest wait between two re-checks of an agent that keeps failing its boot check. */
export const BOOT_RECHECK_MAX_MS = 5 * 60_000;
export const DEFAULT_BOOT_RECHECK_MS = 5000;

/**
 * Invariant: boot state is written only by the replica holding the leader lease at that moment —
 * the lease check and the write are one script — and every write bumps the gate epoch, so workers'
 * cached gate state (gate-cache.ts) sees it on their next run, and the boot generation, so the
 * metrics snapshot re-reads boot state (snapshot-changes.ts). KEYS: boot hash, leader lease, gate
 * epoch, snapshot generations. ARGV: holder id ('' = unfenced), agent ('' = clear the whole hash),
 * state JSON. Returns 1 if written.
 */
const WRITE_BOOT_STATE_LUA = `
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
redis.call('INCR', KEYS[3])
redis.call('HINCRBY', KEYS[4], 'boot', 1)
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotWriteBootState(boot: string, lease: string, epoch: string, generations: string, holder: string, agent: string, json: string): Result<number, Context>;
  }
}

/** Fenced writes of boot state and their `boot:agent` events; throws NotLeaderError once deposed. */
export function bootStateWriter(deps: Pick<BootDeps, 'redis' | 'keys' | 'bus' | 'fence'>) {
  const { redis, keys, bus, fence } = deps;
  defineScripts(redis, { 'werkpilotWriteBootState-4': WRITE_BOOT_STATE_LUA });
  const write = async (agent: string, json: string, what: string) => {
    const written = await redis.werkpilotWriteBootState(bootKey(keys), fence?.key ?? leaderKey(keys), keys.gateEpoch, snapshotGenerationsKey(keys), fence?.id ?? '', agent, json);
    if (written !== 1) throw new NotLeaderError(what);
  };
  return {
    /** Forgets every verdict (a fresh boot; an agent removed from the registry included). */
    reset: () => write('', '', 'boot'),
    /** Stores one agent's state; a decided one (not `checking`) is also published as `boot:agent`. */
    async record(agent: string, state: AgentBootState, event: Record<string, unknown> = {}): Promise<void> {
      await write(agent, JSON.stringify(state), 'boot');
      if (state.status !== 'checking') await bus.publish('boot:agent', { ...event, ...state }, agent);
    },
  };
}

/** The next state of an agent after one boot check, with the backoff of a check that did not pass. */
export function checkedState(
  outcome: { status: BootStatus; reason?: string },
  previous: AgentBootState | undefined,
  context: { layer: number; now: number; durationMs: number; recheckBaseMs: number; requestSeq?: number },
): AgentBootState {
  const base = {
    ...outcome,
    layer: context.layer,
    at: new Date(context.now).toISOString(),
    durationMs: context.durationMs,
    ...(context.requestSeq !== undefined ? { requestSeq: context.requestSeq } : previous?.requestSeq !== undefined ? { requestSeq: previous.requestSeq } : {}),
  };
  if (outcome.status === 'ok') return base;
  const failedChecks = (previous && previous.status !== 'ok' && previous.status !== 'blocked' ? (previous.failedChecks ?? 0) : 0) + 1;
  const waitMs = Math.min(context.recheckBaseMs * 2 ** (failedChecks - 1), BOOT_RECHECK_MAX_MS);
  return { ...base, failedChecks, nextCheckAt: new Date(context.now + waitMs).toISOString() };
}

/** Boots the registry layer by layer; resolves when every layer has finished. */
export async function bootAgents(deps: BootDeps): Promise<BootReport> {
  const clock = deps.clock ?? Date.now;
  const log = deps.log.child({ component: 'boot' });
  const bootId = String(clock());
  const startedAt = clock();
  const report: BootReport = { bootId, layers: [], agents: {}, durationMs: 0 };
  const iso = () => new Date(clock()).toISOString();
  const writer = bootStateWriter(deps);
  const record = async (agent: string, state: AgentBootState) => {
    report.agents[agent] = state;
    await writer.record(agent, state, { bootId });
  };

  await writer.reset();
  await withBootChecks(deps, bootId, async (check) => {
    for (const [layer, agents] of deps.registry.layers.entries()) {
      const layerStart = clock();
      log.info({ layer, agents }, 'booting layer');
      await Promise.all(
        agents.map(async (agent) => {
          const spec = deps.registry.require(agent);
          const blockers = spec.dependsOn.flatMap((dep) => blockingReason(dep, report.agents[dep]));
          if (blockers.length > 0) {
            await record(agent, { status: 'blocked', layer, reason: joinSkipReasons(uniqueSkipReasons(blockers)), at: iso() });
            return;
          }
          await record(agent, { status: 'checking', layer, at: iso() });
          const checkStart = clock();
          const outcome = await check(agent);
          const now = clock();
          await record(agent, checkedState(outcome, undefined, { layer, now, durationMs: now - checkStart, recheckBaseMs: deps.recheckBaseMs ?? DEFAULT_BOOT_RECHECK_MS }));
        }),
      );
      const durationMs = clock() - layerStart;
      report.layers.push({ layer, agents, durationMs });
      const outcomes = Object.fromEntries(agents.map((a) => [a, report.agents[a]!.status]));
      await deps.bus.publish('boot:layer', { bootId, layer, agents, durationMs, outcomes });
      log.info({ layer, durationMs, outcomes }, 'layer booted');
    }
  });
  report.durationMs = clock() - startedAt;
  log.info({ layers: report.layers.length, durationMs: report.durationMs }, 'boot finished');
  return report;
}

/**
 * Starts the boot in the background (HTTP keeps serving meanwhile) and logs its failure instead of
 * crashing the scheduler; the promise resolves to the report, or undefined when the boot failed
 * (the boot healer then checks what it left undecided).
 */
export function startBoot(deps: BootDeps): Promise<BootReport | undefined> {
  return bootAgents(deps).catch((err: unknown) => {
    if (err instanceof NotLeaderError) deps.log.warn({ err }, err.message);
    else deps.log.error({ err }, 'boot failed; the boot healer will check the agents it did not decide');
    return undefined;
  });
}

/** Why a dependency's boot state blocks its dependents: its own failure, or what blocks it. */
export function blockingReason(dependency: string, state: AgentBootState | undefined): SkipReason[] {
  if (state?.status === 'failed') return [dependencySkipReason(dependency, `failed boot: ${state.reason ?? 'no reason given'}`)];
  if (state?.status === 'blocked') return splitSkipReasons(state.reason ?? '');
  return [];
}

/** Runs `work` with a function that boot-checks one agent on a worker (one QueueEvents for all of them). */
export async function withBootChecks<T>(
  deps: Pick<BootDeps, 'systemQueue' | 'redis' | 'keys' | 'registry' | 'checkTimeoutMs' | 'pickupTimeoutMs'>,
  checkId: string,
  work: (check: (agent: string) => Promise<{ status: BootStatus; reason?: string }>) => Promise<T>,
): Promise<T> {
  const checkTimeoutMs = deps.checkTimeoutMs ?? 10_000;
  const pickupTimeoutMs = deps.pickupTimeoutMs ?? 60_000;
  // Blocking (XREAD): its own connection, which must wait through reconnects (BullMQ requires it).
  // (A template BullMQ copies; lazy, so it never connects itself.)
  const connection = duplicateRedisConnection(deps.redis, 'boot-events', { maxRetriesPerRequest: null, lazyConnect: true });
  connection.on('error', () => {});
  const events = new QueueEvents(deps.systemQueue.name, { connection, prefix: deps.keys.bullPrefix });
  events.on('error', () => {});
  try {
    await events.waitUntilReady();
    // job.waitUntilFinished adds a 'closing' listener to the queue per waiting check, and a layer
    // waits for all its checks at once: allow one per agent of the widest layer (bounded, not a leak).
    const widestLayer = Math.max(0, ...deps.registry.layers.map((agents) => agents.length));
    deps.systemQueue.setMaxListeners(Math.max(deps.systemQueue.getMaxListeners(), widestLayer + 10));
    return await work((agent) => runBootCheck(deps.systemQueue, events, checkId, agent, checkTimeoutMs, pickupTimeoutMs));
  } finally {
    await events.close().catch(() => {});
    connection.disconnect();
  }
}

async function runBootCheck(
  queue: Queue,
  events: QueueEvents,
  checkId: string,
  agent: string,
  checkTimeoutMs: number,
  pickupTimeoutMs: number,
): Promise<{ status: BootStatus; reason?: string }> {
  const outcome = await runCheckOnWorker(queue, events, {
    name: BOOT_CHECK_JOB,
    data: { agent, timeoutMs: checkTimeoutMs },
    opts: { jobId: `boot:${checkId}:${agent}`, attempts: 1, removeOnComplete: { count: 1000 }, removeOnFail: { count: 100 } },
    waitMs: pickupTimeoutMs + checkTimeoutMs,
  });
  switch (outcome.kind) {
    case 'answered':
      return outcome.result?.healthy ? { status: 'ok' } : { status: 'failed', reason: outcome.result?.reason ?? 'unhealthy' };
    case 'error':
      return { status: 'failed', reason: outcome.message };
    case 'timed-out':
      if (outcome.wasTaken) return { status: 'failed', reason: `boot check timed out after ${checkTimeoutMs} ms` };
      return { status: 'unchecked', reason: `no worker took the boot check within ${Math.round((pickupTimeoutMs + checkTimeoutMs) / 1000)} s` };
  }
}

/**
 * The worker side of a boot check: the agent's healthCheck with a timeout (shared with the health
 * monitor's check). An agent without a healthCheck boots `ok`.
 */
export function createBootCheckHandler({ registry, log }: { registry: Registry; log: Logger }): SystemJobHandler {
  return createHealthCheckHandler({ registry, log: log.child({ component: 'boot-check' }) });
}

/** Boot states by agent, as the last boot left them. */
export async function readBootStates({ redis, keys }: { redis: Redis; keys: Keys }): Promise<Map<string, AgentBootState>> {
  const raw = await redis.hgetall(bootKey(keys));
  return new Map(Object.entries(raw).map(([agent, json]) => [agent, JSON.parse(json) as AgentBootState]));
}

/**
 * Gate rules: an agent `blocked` at boot skips its runs with the root cause; an agent whose direct
 * dependency `failed` boot skips with `dependency X failed boot: <reason>`.
 */
export function bootGateRules(): GateRule[] {
  return [
    ({ spec, view }) => {
      const state = view.of(spec.name).boot;
      return state?.status === 'blocked' ? splitSkipReasons(state.reason ?? 'blocked at boot') : null;
    },
    dependencyRule((dep, { view }) => {
      const state = view.of(dep).boot;
      return state?.status === 'failed' ? `failed boot: ${state.reason ?? 'no reason given'}` : null;
    }),
  ];
}
