import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DURATION_SAMPLES, OUTCOME_WINDOW, type AgentStateStore } from '../self-healing/agent-state.js';
import type { EventBus } from '../messaging/bus.js';
import type { CircuitBreaker } from '../self-healing/circuit-breaker.js';
import { type Keys, restartsKey, skipCausesKey } from '../redis/keys.js';
import { QUEUE_NAMES } from '../queues/queues.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import type { Registry } from '../agents/registry.js';
import { buildAgentReport, reportDay, ReportStore, type AgentTotals, type NightlyReport } from './reports.js';
import { readScores } from '../self-healing/score.js';
import { sweepRollups } from '../run/run-rollups.js';
import type { SystemJobHandler } from '../queues/system-worker.js';

/**
 * The nightly optimisation: a job scheduler on the `system` queue (`NIGHTLY_CRON` in `NIGHTLY_TZ`,
 * 23:00 Europe/Zurich by default) whose job, run by a worker, recomputes every agent's score,
 * writes the day's report with tuning advice, trims samples and completed jobs past retention and
 * publishes `nightly:report`.
 *
 * Exactly one report per night: the job scheduler has a fixed id, so any number of schedulers
 * registering it make one scheduler and one job per tick; and the report is saved only if its day
 * has none yet, in one Lua step, so even a duplicated job writes and announces one report.
 */

export const NIGHTLY_JOB = 'nightly';
export const NIGHTLY_SCHEDULER_ID = 'nightly';

export interface NightlyJobData {
  /** Replace the day's report if there is one (on-demand runs); cron runs never replace. */
  force?: boolean;
}

/**
 * Creates or updates the nightly job scheduler (idempotent: a fixed id, so every scheduler replica
 * or restart leaves exactly one).
 */
export async function registerNightlySchedule(systemQueue: Queue, { cron, tz }: { cron: string; tz: string }): Promise<void> {
  await systemQueue.upsertJobScheduler(
    NIGHTLY_SCHEDULER_ID,
    { pattern: cron, tz },
    { name: NIGHTLY_JOB, data: {} satisfies NightlyJobData, opts: { attempts: 1, removeOnComplete: { count: 30 }, removeOnFail: { count: 30 } } },
  );
}

/** Queues a nightly run now (on demand); it replaces today's report. Returns the job id. */
export async function triggerNightly(systemQueue: Queue): Promise<string> {
  const job = await systemQueue.add(NIGHTLY_JOB, { force: true } satisfies NightlyJobData, {
    attempts: 1,
    removeOnComplete: { count: 30 },
    removeOnFail: { count: 30 },
  });
  return job.id!;
}

export interface NightlyDeps {
  redis: Redis;
  keys: Keys;
  registry: Registry;
  state: AgentStateStore;
  circuit: CircuitBreaker;
  bus: EventBus;
  log: Logger;
  /** NIGHTLY_TZ: the report's day is the date there. */
  timezone: string;
  /** COMPLETED_RETAIN: completed jobs kept per queue. */
  completedRetain: number;
  clock?: () => number;
}

export interface NightlyOutcome {
  report: NightlyReport;
  /** false when the day already had a report and this run was not forced (nothing written or published). */
  saved: boolean;
}

/** One nightly optimisation. Safe to run twice: without `force`, a day keeps its first report. */
export async function runNightly(deps: NightlyDeps, { force = false }: NightlyJobData = {}): Promise<NightlyOutcome> {
  const clock = deps.clock ?? Date.now;
  const log = deps.log.child({ component: 'nightly' });
  const store = new ReportStore({ redis: deps.redis, keys: deps.keys });
  const now = clock();
  const id = reportDay(now, deps.timezone);
  if (!force) {
    const existing = await store.get(id);
    if (existing) {
      log.info({ id }, 'nightly report already written for this day');
      return { report: existing, saved: false };
    }
  }

  const specs = deps.registry.list();
  const names = specs.map((s) => s.name);
  const [states, scores, circuits, restartTotals, skipCauses, previousReports] = await Promise.all([
    deps.state.getMany(names),
    readScores(deps, specs),
    deps.circuit.getMany(names),
    deps.circuit.restartTotals(names),
    readSkipCauses(deps.redis, deps.keys, names),
    store.list(),
  ]);
  const previous = previousReports.find((r) => r.id !== id);

  const trimmed = await trimPastRetention(deps, names, now);

  const agents: NightlyReport['agents'] = {};
  for (const spec of specs) {
    const state = states.get(spec.name)!;
    const totals: AgentTotals = {
      runs: state.runs,
      failures: state.failures,
      skipped: state.skipped,
      restarts: restartTotals.get(spec.name) ?? 0,
      skipCauses: skipCauses.get(spec.name) ?? {},
    };
    agents[spec.name] = buildAgentReport({
      spec,
      state,
      score: scores.get(spec.name) ?? null,
      restartsLastHour: circuits.get(spec.name)!.restartsLastHour,
      totals,
      previous: previous?.agents[spec.name]?.totals,
    });
  }
  const report: NightlyReport = {
    id,
    generatedAt: new Date(now).toISOString(),
    timezone: deps.timezone,
    since: previous?.generatedAt ?? null,
    agents,
    flagged: Object.values(agents)
      .filter((a) => a.flagged)
      .map((a) => a.agent),
    trimmed,
  };

  const saved = await store.save(report, { onlyIfAbsent: !force });
  if (!saved) {
    log.info({ id }, "another nightly run wrote this day's report first");
    return { report: (await store.get(id)) ?? report, saved: false };
  }
  await deps.bus.publish('nightly:report', { id, generatedAt: report.generatedAt, flagged: report.flagged, agents: names.length });
  log.info({ id, flagged: report.flagged, trimmed }, 'nightly report written');
  return { report, saved: true };
}

async function readSkipCauses(redis: Redis, keys: Keys, agents: readonly string[]): Promise<Map<string, Record<string, number>>> {
  const pipeline = redis.pipeline();
  for (const agent of agents) pipeline.hgetall(skipCausesKey(keys, agent));
  const replies = await execOrThrow(pipeline);
  return new Map(agents.map((agent, i) => [agent, Object.fromEntries(Object.entries(replies[i] as Record<string, string>).map(([k, v]) => [k, Number(v)]))]));
}

/**
 * Drops what retention no longer covers: duration samples (and the outcome list older versions
 * kept) beyond their windows,
 * restarts outside the hour, the agents' rollup hours past ROLLUP_RETENTION_HOURS, and completed jobs beyond COMPLETED_RETAIN per queue (oldest first;
 * BullMQ's `removeOnComplete` normally keeps to it, jobs added without it are caught here).
 */
async function trimPastRetention(deps: NightlyDeps, agents: readonly string[], now: number): Promise<{ completedJobs: number }> {
  const pipeline = deps.redis.pipeline();
  for (const agent of agents) {
    pipeline.ltrim(deps.keys.agentDurations(agent), 0, DURATION_SAMPLES - 1);
    pipeline.ltrim(deps.keys.agentOutcomes(agent), 0, OUTCOME_WINDOW - 1);
    pipeline.zremrangebyscore(restartsKey(deps.keys, agent), '-inf', now - 60 * 60 * 1000);
  }
  await execOrThrow(pipeline);
  const rollupHours = await sweepRollups(deps.redis, deps.keys, agents, now);
  if (rollupHours > 0) deps.log.child({ component: 'nightly' }).info({ rollupHours }, 'deleted rollup hours past retention');

  let completedJobs = 0;
  for (const name of [QUEUE_NAMES.agents, QUEUE_NAMES.system]) {
    const queue = new Queue(name, { connection: deps.redis, prefix: deps.keys.bullPrefix });
    queue.on('error', () => {});
    try {
      const excess = (await queue.getCompletedCount()) - deps.completedRetain;
      if (excess > 0) completedJobs += (await queue.clean(0, excess, 'completed')).length;
    } finally {
      await queue.close();
    }
  }
  return { completedJobs };
}

/** The worker's handler of the `nightly` system job. */
export function createNightlyHandler(deps: NightlyDeps): SystemJobHandler {
  return async (job) => {
    const { report, saved } = await runNightly(deps, job.data as NightlyJobData);
    return { id: report.id, saved, flagged: report.flagged };
  };
}
