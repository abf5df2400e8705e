import { QueueEvents, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { HealthCheckResult } from './agent.js';
import type { EventBus } from './bus.js';
import { dependencyBatchRule, type GateRule } from './gating.js';
import { createHealthCheckHandler } from './health.js';
import type { Keys } from './keys.js';
import type { MetricsSnapshot } from './metrics-snapshot.js';
import type { Registry } from './registry.js';
import type { SystemJobHandler } from './system-worker.js';

/**
 * Layered boot (the predecessor's "4-layer dependency boot", any number of layers): layer k holds
 * the agents of dependency depth k. Each agent of a layer gets a `boot-check` job on the `system`
 * queue, where a worker runs its `healthCheck` with a timeout; layer k+1 starts once every check of
 * layer k has answered. An agent whose healthCheck fails (or throws, or times out) has `failed`
 * boot; every transitive dependent is `blocked` with the root cause
 * (`dependency crm-sync failed boot: <reason>`), gets no check, and its runs are skipped with that
 * reason until the next boot. An agent no worker checked in time is `unchecked` (it blocks nothing:
 * a scheduler that starts before its workers must not block the whole graph).
 *
 * State lives in one Redis hash (agent → JSON), rewritten by every boot, shown in /api/metrics as
 * `agents.<name>.boot`. Events: `boot:layer` per layer, `boot:agent` per agent outcome.
 */

export const BOOT_CHECK_JOB = 'boot-check';

export type BootStatus = 'checking' | 'ok' | 'failed' | 'blocked' | 'unchecked';

export interface AgentBootState {
  status: BootStatus;
  layer: number;
  reason?: string;
  /** When this agent's boot outcome was decided (ISO-8601). */
  at: string;
  durationMs?: number;
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
  clock?: () => number;
}

const bootKey = (keys: Keys) => keys.key('boot');

/** Boots the registry layer by layer; resolves when every layer has finished. */
export async function bootAgents(deps: BootDeps): Promise<BootReport> {
  const clock = deps.clock ?? Date.now;
  const checkTimeoutMs = deps.checkTimeoutMs ?? 10_000;
  const pickupTimeoutMs = deps.pickupTimeoutMs ?? 60_000;
  const log = deps.log.child({ component: 'boot' });
  const bootId = String(clock());
  const startedAt = clock();
  const report: BootReport = { bootId, layers: [], agents: {}, durationMs: 0 };
  const iso = () => new Date(clock()).toISOString();

  const record = async (agent: string, state: AgentBootState) => {
    report.agents[agent] = state;
    const pipeline = deps.redis.pipeline();
    pipeline.hset(bootKey(deps.keys), agent, JSON.stringify(state));
    if (state.status !== 'checking') deps.bus.addTo(pipeline, deps.bus.event('boot:agent', { bootId, ...state }, agent));
    await pipeline.exec();
  };

  // A fresh boot forgets the previous one's verdicts (an agent removed from the registry included).
  await deps.redis.del(bootKey(deps.keys));
  const connection = deps.redis.duplicate({ connectionName: `${deps.redis.options.connectionName ?? 'werkpilot'}:boot-events` });
  connection.on('error', () => {});
  const events = new QueueEvents(deps.systemQueue.name, { connection, prefix: deps.keys.bullPrefix });
  events.on('error', () => {});
  try {
    await events.waitUntilReady();
    // job.waitUntilFinished adds a 'closing' listener to the queue per waiting check, and a layer
    // waits for all its checks at once: allow one per agent of the widest layer (bounded, not a leak).
    const widestLayer = Math.max(0, ...deps.registry.layers.map((agents) => agents.length));
    deps.systemQueue.setMaxListeners(Math.max(deps.systemQueue.getMaxListeners(), widestLayer + 10));
    for (const [layer, agents] of deps.registry.layers.entries()) {
      const layerStart = clock();
      log.info({ layer, agents }, 'booting layer');
      await Promise.all(
        agents.map(async (agent) => {
          const spec = deps.registry.require(agent);
          const blockers = spec.dependsOn.flatMap((dep) => blockingReason(dep, report.agents[dep]));
          if (blockers.length > 0) {
            await record(agent, { status: 'blocked', layer, reason: [...new Set(blockers)].join('; '), at: iso() });
            return;
          }
          await record(agent, { status: 'checking', layer, at: iso() });
          const checkStart = clock();
          const outcome = await runBootCheck(deps.systemQueue, events, bootId, agent, checkTimeoutMs, pickupTimeoutMs);
          await record(agent, { ...outcome, layer, at: iso(), durationMs: clock() - checkStart });
        }),
      );
      const durationMs = clock() - layerStart;
      report.layers.push({ layer, agents, durationMs });
      const outcomes = Object.fromEntries(agents.map((a) => [a, report.agents[a]!.status]));
      await deps.bus.publish('boot:layer', { bootId, layer, agents, durationMs, outcomes });
      log.info({ layer, durationMs, outcomes }, 'layer booted');
    }
  } finally {
    await events.close().catch(() => {});
    connection.disconnect();
  }
  report.durationMs = clock() - startedAt;
  log.info({ layers: report.layers.length, durationMs: report.durationMs }, 'boot finished');
  return report;
}

/**
 * Starts the boot in the background (HTTP keeps serving meanwhile) and logs its failure instead of
 * crashing the scheduler; the promise resolves to the report, or undefined when the boot failed.
 */
export function startBoot(deps: BootDeps): Promise<BootReport | undefined> {
  return bootAgents(deps).catch((err: unknown) => {
    deps.log.error({ err }, 'boot failed');
    return undefined;
  });
}

/** Why a dependency's boot state blocks its dependents: its own failure, or what blocks it. */
function blockingReason(dependency: string, state: AgentBootState | undefined): string[] {
  if (state?.status === 'failed') return [`dependency ${dependency} failed boot: ${state.reason ?? 'no reason given'}`];
  if (state?.status === 'blocked') return (state.reason ?? '').split('; ').filter(Boolean);
  return [];
}

async function runBootCheck(
  queue: Queue,
  events: QueueEvents,
  bootId: string,
  agent: string,
  checkTimeoutMs: number,
  pickupTimeoutMs: number,
): Promise<{ status: BootStatus; reason?: string }> {
  const job = await queue.add(
    BOOT_CHECK_JOB,
    { agent, timeoutMs: checkTimeoutMs },
    { jobId: `boot:${bootId}:${agent}`, attempts: 1, removeOnComplete: { count: 1000 }, removeOnFail: { count: 100 } },
  );
  try {
    const result = (await job.waitUntilFinished(events, pickupTimeoutMs + checkTimeoutMs)) as HealthCheckResult;
    return result?.healthy ? { status: 'ok' } : { status: 'failed', reason: result?.reason ?? 'unhealthy' };
  } catch (err) {
    const message = (err as Error).message;
    if (!/timed out before finishing/.test(message)) return { status: 'failed', reason: message };
    const state = await job.getState();
    if (state === 'active') return { status: 'failed', reason: `boot check timed out after ${checkTimeoutMs} ms` };
    await job.remove().catch(() => {});
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
export function bootGateRules({ redis, keys }: { redis: Redis; keys: Keys }): GateRule[] {
  const read = async (agents: readonly string[]) =>
    (await redis.hmget(bootKey(keys), ...agents)).map((json) => (json ? (JSON.parse(json) as AgentBootState) : undefined));
  return [
    async ({ spec }) => {
      const [state] = await read([spec.name]);
      return state?.status === 'blocked' ? (state.reason ?? 'blocked at boot').split('; ') : null;
    },
    dependencyBatchRule(async (dependencies) =>
      (await read(dependencies)).map((state) => (state?.status === 'failed' ? `failed boot: ${state.reason ?? 'no reason given'}` : null)),
    ),
  ];
}

/** Snapshot extension: `agents.<name>.boot` = `{ status, layer, reason?, at, durationMs? }` or null before the first boot. */
export function bootSnapshot(deps: { redis: Redis; keys: Keys }): (snapshot: MetricsSnapshot) => Promise<void> {
  return async (snapshot) => {
    const states = await readBootStates(deps);
    for (const [name, entry] of Object.entries(snapshot.agents)) entry.boot = states.get(name) ?? null;
  };
}
