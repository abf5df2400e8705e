import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import { runJobOptions, type Retention, type RunJobData } from './queues.js';
import type { Registry } from '../agents/registry.js';

export interface ReconcileResult {
  added: string[];
  updated: string[];
  removed: string[];
  unchanged: string[];
}

/** How many scheduler upserts/removals are in flight at once during reconcile. */
const BATCH = 100;

/**
 * Makes the `agents` queue's job schedulers match the registry: one per scheduled agent
 * (id = agent name), added, updated or removed. Idempotent: an agent whose schedule and job options
 * are unchanged is left alone (compared by a fingerprint kept in the template data), so restarting
 * the scheduler never re-creates schedulers or their next tick.
 */
export async function reconcileJobSchedulers({
  queue,
  registry,
  retention,
  log,
  paused = new Set(),
}: {
  queue: Queue<RunJobData>;
  registry: Registry;
  retention: Retention;
  log: Logger;
  /** Agents whose schedule an operator paused (schedule-pause.ts): they keep no scheduler. */
  paused?: ReadonlySet<string>;
}): Promise<ReconcileResult> {
  const existing = new Map((await queue.getJobSchedulers(0, -1)).map((s) => [s.key, s]));
  const result: ReconcileResult = { added: [], updated: [], removed: [], unchanged: [] };
  const tasks: (() => Promise<unknown>)[] = [];

  for (const spec of registry.list()) {
    if (!spec.schedule || paused.has(spec.name)) continue;
    const hash = schedulerHash(spec, retention);
    const current = existing.get(spec.name);
    existing.delete(spec.name);
    if (current?.template?.data?.schedulerHash === hash) {
      result.unchanged.push(spec.name);
      continue;
    }
    (current ? result.updated : result.added).push(spec.name);
    tasks.push(() => upsertScheduler(queue, spec, retention, hash));
  }
  for (const id of existing.keys()) {
    result.removed.push(id);
    tasks.push(() => queue.removeJobScheduler(id));
  }
  for (let i = 0; i < tasks.length; i += BATCH) await Promise.all(tasks.slice(i, i + BATCH).map((t) => t()));

  log.info({ added: result.added.length, updated: result.updated.length, removed: result.removed.length, unchanged: result.unchanged.length }, 'job schedulers reconciled');
  return result;
}

/** Creates or updates the job scheduler of scheduled agent `spec` (resuming a paused schedule, too). */
export function upsertAgentScheduler(queue: Queue<RunJobData>, spec: AgentSpec, retention: Retention) {
  return upsertScheduler(queue, spec, retention, schedulerHash(spec, retention));
}

function upsertScheduler(queue: Queue<RunJobData>, spec: AgentSpec, retention: Retention, hash: string) {
  const { cron, tz } = spec.schedule!;
  return queue.upsertJobScheduler(
    spec.name,
    { pattern: cron, ...(tz ? { tz } : {}) },
    { name: spec.name, data: { agent: spec.name, trigger: 'cron', schedulerHash: hash }, opts: runJobOptions(spec, retention) },
  );
}

function schedulerHash(spec: AgentSpec, retention: Retention): string {
  const material = JSON.stringify({ schedule: spec.schedule, opts: runJobOptions(spec, retention) });
  return createHash('sha1').update(material).digest('hex').slice(0, 16);
}
