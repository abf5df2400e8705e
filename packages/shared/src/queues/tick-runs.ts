import { randomUUID } from 'node:crypto';
import type { Job, Queue } from 'bullmq';
import { CronExpressionParser } from 'cron-parser';
import type { ChainableCommander, Redis } from 'ioredis';
import type { AgentSpec } from '../agents/agent.js';
import { PARKED_RECHECK_MS } from '../run/dependency-waits.js';
import { InvalidInputError } from '../process/errors.js';
import { catchUpMarkerKey, type Keys, pendingCountsKey, runWaitersKey } from '../redis/keys.js';
import { runJobOptions, type Retention, type RunJobData } from './queues.js';
import { checkControlKeys } from '../run/run-trigger.js';
import type { Registry } from '../agents/registry.js';

/**
 * Runs that stand for a cron tick: every cron run, the catch-up runs of ticks missed while no worker
 * ran (`catchUp`), and backfilled ticks (`werkpilot backfill`). Each knows its tick —
 * `ctx.scheduledAt` — so an agent can do its work once per tick.
 *
 * Catch-up and backfill make several ticks' runs at once. They run one after another, in tick
 * order, each under the agent's controls like any run: a chain. Each run but the first is created
 * parked and registered as a waiter of the tick before it (the dependency-wait protocol of
 * dependency-waits.ts, waiting only for an order: however that tick ended, the next one goes on),
 * so the script that finishes one tick promotes the next — no polling, no worker slot held while
 * waiting. Catch-up runs keep the job scheduler's ids (`repeat:<agent>:<tick>`), so dependents'
 * catch-up runs of the same tick wait for them as scheduled runs do; backfilled ones are
 * `backfill:<backfillId>-<tick>:<agent>`.
 */

/** Most ticks one catch-up or backfill makes. */
export const MAX_CHAINED_TICKS = 1000;

/** How long a chain's waiter registrations live (a long chain's last tick may wait days for its turn). */
const CHAIN_WAIT_TTL_SECONDS = 7 * 86_400;

const CRON_RUN_ID = /^repeat:[a-z0-9][a-z0-9-]*:(\d+)$/;

/** The tick a run stands for (`ctx.scheduledAt`): from a scheduled run's id, or a chained run's data; else undefined. */
export function scheduledAtOf(job: Pick<Job<RunJobData>, 'id' | 'data'>): Date | undefined {
  const tick = job.id ? CRON_RUN_ID.exec(job.id) : null;
  if (tick) return new Date(Number(tick[1]));
  const at = job.data?.scheduledAt;
  return typeof at === 'number' ? new Date(at) : undefined;
}

/** The ticks of `spec`'s schedule after `after` and at most `until` (ms), in order; at most `max` (+1 to tell there are more). */
export function ticksBetween(spec: Pick<AgentSpec, 'schedule'>, after: number, until: number, max = MAX_CHAINED_TICKS): number[] {
  if (!spec.schedule) return [];
  const it = CronExpressionParser.parse(spec.schedule.cron, { currentDate: new Date(after), ...(spec.schedule.tz ? { tz: spec.schedule.tz } : {}) });
  const ticks: number[] = [];
  while (ticks.length <= max) {
    const next = it.next().getTime();
    if (next > until) break;
    ticks.push(next);
  }
  return ticks;
}

export interface TickChainDeps {
  queue: Queue<RunJobData>;
  redis: Redis;
  keys: Keys;
  retention: Retention;
  /** Safety deadline of the parked runs of the chain (they re-check by themselves after it). */
  parkedRecheckMs?: number;
}

interface ChainLink {
  runId: string;
  tick: number;
  /** The run it waits for (the previous tick), if any. */
  after?: string;
}

/**
 * Queues the runs of `links` in one chain (see above): registrations first (one MULTI), then one
 * `addBulk` with every run that waits for another parked. A link without `after` starts now.
 * Existing job ids are left alone by BullMQ (adding a tick twice is harmless).
 */
async function queueChain(deps: TickChainDeps, spec: AgentSpec, links: readonly ChainLink[], trigger: 'catch-up' | 'backfill', data?: unknown): Promise<void> {
  if (links.length === 0) return;
  const multi = deps.redis.multi();
  for (const link of links) if (link.after) addChainWaiterTo(multi, deps.keys, link.after, link.runId, spec.priority);
  await multi.exec();
  const parkedFor = deps.parkedRecheckMs ?? PARKED_RECHECK_MS;
  // The run that starts now goes last, so it cannot finish before the runs it promotes exist.
  const ordered = [...links.filter((l) => l.after), ...links.filter((l) => !l.after)];
  await deps.queue.addBulk(
    ordered.map((link) => ({
      name: spec.name,
      data: { agent: spec.name, trigger, scheduledAt: link.tick, ...(link.after ? { after: link.after } : {}), ...(data !== undefined ? { data } : {}) },
      opts: { ...runJobOptions(spec, deps.retention), jobId: link.runId, ...(link.after ? { delay: parkedFor } : {}) },
    })),
  );
}

function addChainWaiterTo(multi: ChainableCommander, keys: Keys, after: string, runId: string, priority: number): void {
  const waiters = runWaitersKey(keys, after);
  multi.hset(waiters, runId, priority);
  multi.expire(waiters, CHAIN_WAIT_TTL_SECONDS);
  multi.hset(pendingCountsKey(keys), runId, 1);
}

/** What catch-up decided for a late cron run: run it, or skip it with the reason. */
export type CatchUpDecision = { kind: 'run' } | { kind: 'skip'; reason: string };

export interface CatchUpOptions extends Omit<TickChainDeps, 'queue'> {
  /** Where catch-up runs are queued; needed only when an agent has a catch-up window. */
  queue: Queue<RunJobData> | undefined;
  clock?: () => number;
}

/**
 * Applies an agent's `catchUp` policy to a cron run (call it before admission). A run is late when
 * the tick after its own has passed too: ticks were missed while no worker ran, and BullMQ's job
 * scheduler made this one run for them (its next tick is after now). Then:
 *  - `latest`: nothing to do (this is never called for it);
 *  - `none`: this run is skipped too (`missed tick … (catchUp: none)`);
 *  - `{ windowMs }`: this run goes ahead if its tick is within the window, and a run for each
 *    missed tick within it follows, in order (chained after this one), once — a marker makes a
 *    second admission of this run (after parking) not queue them again.
 */
export function createCatchUp(options: CatchUpOptions): (spec: AgentSpec, job: Job<RunJobData>) => Promise<CatchUpDecision> {
  const clock = options.clock ?? Date.now;
  return async (spec, job) => {
    const tick = job.data.trigger === 'cron' && job.id ? CRON_RUN_ID.exec(job.id) : null;
    if (!tick || !spec.schedule || spec.catchUp === 'latest') return { kind: 'run' };
    const at = Number(tick[1]);
    const now = clock();
    const missed = ticksBetween(spec, at, now);
    if (missed.length === 0) return { kind: 'run' };
    const iso = new Date(at).toISOString();
    if (spec.catchUp === 'none') return { kind: 'skip', reason: `missed tick ${iso} (catchUp: none)` };
    const oldest = now - spec.catchUp.windowMs;
    const inWindow = missed.filter((t) => t >= oldest).slice(-MAX_CHAINED_TICKS);
    if (inWindow.length > 0) {
      const marker = catchUpMarkerKey(options.keys, job.id!);
      if (!options.queue) throw new Error('catch-up with a window needs CatchUpOptions.queue');
      if ((await options.redis.set(marker, String(inWindow.length), 'EX', 86_400, 'NX')) === 'OK') {
        const links = inWindow.map((t, i) => ({ runId: `repeat:${spec.name}:${t}`, tick: t, after: i === 0 ? job.id! : `repeat:${spec.name}:${inWindow[i - 1]}` }));
        await queueChain({ ...options, queue: options.queue }, spec, links, 'catch-up');
      }
    }
    return at >= oldest ? { kind: 'run' } : { kind: 'skip', reason: `missed tick ${iso} is older than the catch-up window (${spec.catchUp.windowMs} ms)` };
  };
}

export interface BackfillResult {
  backfillId: string;
  /** Every run of the backfill, in tick order. */
  runs: { runId: string; scheduledAt: string }[];
}

/**
 * Queues a run for every tick of `agent`'s schedule from `from` to `to` (inclusive, ms), one after
 * another in tick order, each with `ctx.scheduledAt` its tick and the agent's controls applied.
 * Throws AgentNotFoundError, or InvalidInputError for an agent without a schedule, a range that
 * is empty or backwards, or more than MAX_CHAINED_TICKS ticks — before anything is written.
 */
export async function backfill(deps: TickChainDeps & { registry: Registry }, agent: string, from: number, to: number, data?: unknown): Promise<BackfillResult> {
  const spec = deps.registry.require(agent);
  if (!spec.schedule) throw new InvalidInputError(`backfill: agent ${agent} has no schedule`);
  if (!Number.isFinite(from) || !Number.isFinite(to)) throw new InvalidInputError('backfill: from and to must be times (ISO 8601, e.g. 2025-01-31T00:00:00Z)');
  if (to < from) throw new InvalidInputError(`backfill: to (${new Date(to).toISOString()}) is before from (${new Date(from).toISOString()})`);
  const ticks = ticksBetween(spec, from - 1, to);
  if (ticks.length === 0)
    throw new InvalidInputError(`backfill: the schedule of ${agent} (${spec.schedule.cron}) has no tick from ${new Date(from).toISOString()} to ${new Date(to).toISOString()}`);
  if (ticks.length > MAX_CHAINED_TICKS) throw new InvalidInputError(`backfill: more than ${MAX_CHAINED_TICKS} ticks of ${agent} in that range; backfill a shorter one`);
  checkControlKeys(spec, data);
  const backfillId = randomUUID();
  // BullMQ takes custom ids of at most three `:`-separated parts.
  const idOf = (tick: number) => `backfill:${backfillId}-${tick}:${spec.name}`;
  const links = ticks.map((tick, i) => ({ runId: idOf(tick), tick, ...(i > 0 ? { after: idOf(ticks[i - 1]!) } : {}) }));
  await queueChain(deps, spec, links, 'backfill', data);
  return { backfillId, runs: links.map((l) => ({ runId: l.runId, scheduledAt: new Date(l.tick).toISOString() })) };
}
