import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AgentStateStore, pipelineRunId } from '@werkpilot/shared';
import { noteSkipped, sleep, startApp, stopApps, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';
import { processCluster, type ProcessCluster } from './_process-cluster.js';

/**
 * Issue 13, the joint soak: a scheduler and three worker processes run a small DAG on a cron
 * schedule and as pipelines while workers are SIGKILLed and restarted, Redis is frozen for seconds
 * (SIGSTOP on this file's redis-server) and runs are cancelled at random through the API. Then a
 * checker reads what the system recorded — every bus event, BullMQ's completed and failed sets, the
 * agents' counters — and what the agents themselves wrote when they ran, and asserts:
 *   1. every run has exactly one outcome (completed, skipped, cancelled or dead-lettered), and the
 *      BullMQ sets and the counters agree with it;
 *   2. no dependent started before its dependency of the same tick or pipeline completed, and none
 *      started when that dependency did not succeed;
 *   3. no two runs of one agent (all of them allow one at a time) executed at once.
 *
 * The chaos lasts SOAK_CHAOS_SECONDS (75 by default, bounded for CI); set it higher for a longer soak.
 */

const redis = useTestRedis();
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-soak-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const CHAOS_SECONDS = Number(process.env.SOAK_CHAOS_SECONDS ?? 75);
if (!Number.isFinite(CHAOS_SECONDS) || CHAOS_SECONDS <= 0) throw new Error(`SOAK_CHAOS_SECONDS=${process.env.SOAK_CHAOS_SECONDS}: use a positive number of seconds`);

/** The DAG: root → left, root → right, left + right → join; every agent on the same 2 s cron. */
const DEPENDS_ON: Record<string, string[]> = { root: [], left: ['root'], right: ['root'], join: ['left', 'right'] };
const AGENTS = Object.keys(DEPENDS_ON);

/**
 * An agent that logs each execution's start and end (its pid, the wall clock) to $E2E_DIR/log, works
 * `minMs`..`maxMs` (giving up at once when aborted), and fails an attempt with probability `failRate`
 * (so some runs wait in their retry backoff — delayed runs to cancel — and a few are dead-lettered).
 */
const agent = (name: string, overlap: string, minMs: number, maxMs: number, failRate: number) => `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
const note = (line) => appendFileSync(process.env.E2E_DIR + '/log', line + '\\n');
export default defineAgent({
  name: '${name}',
  schedule: { cron: '*/2 * * * * *' },
  dependsOn: ${JSON.stringify(DEPENDS_ON[name])},
  overlap: '${overlap}',
  timeoutMs: 15000,
  retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 1500 } },
  async run(ctx) {
    note('start ${name} ' + ctx.runId + ' ' + process.pid + ' ' + Date.now());
    const ms = ${minMs} + Math.floor(Math.random() * ${maxMs - minMs});
    const how = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve('done'), ms);
      ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve('aborted'); }, { once: true });
    });
    note('end ${name} ' + ctx.runId + ' ' + process.pid + ' ' + Date.now() + ' ' + how);
    if (how === 'done' && Math.random() < ${failRate}) throw new Error('an attempt failing on purpose');
    return null;
  },
});
`;

const agentsDir = writeAgentsDir({
  'root.ts': agent('root', 'skip', 150, 500, 0.1),
  'left.ts': agent('left', 'queue', 100, 600, 0.1),
  'right.ts': agent('right', 'skip', 100, 400, 0),
  'join.ts': agent('join', 'skip', 50, 300, 0.05),
});

const OUTCOME_OF: Record<string, string> = { 'agent:completed': 'success', 'agent:skipped': 'skipped', 'agent:cancelled': 'cancelled', 'agent:dlq': 'dlq' };

/** One execution of an agent's code, from the agents' own log: `end` is undefined while it runs (or if its process was killed). */
interface Execution {
  agent: string;
  runId: string;
  pid: number;
  start: number;
  end?: number;
  how?: string;
}

function readExecutions(file: string): Execution[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const open = new Map<string, Execution>();
  const all: Execution[] = [];
  for (const line of text.split('\n').filter(Boolean)) {
    const [kind, agentName, runId, pid, at, how] = line.split(' ');
    const key = `${runId} ${pid}`;
    if (kind === 'start') {
      const e: Execution = { agent: agentName!, runId: runId!, pid: Number(pid), start: Number(at) };
      open.set(key, e);
      all.push(e);
    } else {
      const e = open.get(key);
      if (e) {
        e.end = Number(at);
        e.how = how!;
        open.delete(key);
      }
    }
  }
  return all;
}

/** The run a run of `agent` waits for in its tick or pipeline, for dependency `dep` (undefined for a run of neither). */
function dependencyRunId(runId: string, dep: string): string | undefined {
  const tick = /^repeat:[a-z]+:(\d+)$/.exec(runId);
  if (tick) return `repeat:${dep}:${tick[1]}`;
  const pipeline = /^pipeline:(.+):[a-z]+$/.exec(runId);
  if (pipeline) return pipelineRunId(pipeline[1]!, dep);
  return undefined;
}

/** What Redis holds about runs that did not end: their jobs, the agents' leases and waiters, and the events of those runs. */
async function diagnose(cluster: ProcessCluster, open: string[]): Promise<string> {
  const client = redis.client();
  const lines: string[] = [`now ${Date.now()}`];
  for (const key of await client.keys(`{${cluster.prefix}}:*lease*`)) {
    const type = await client.type(key);
    const value = type === 'string' ? await client.get(key) : type === 'list' ? await client.lrange(key, 0, -1) : type;
    lines.push(`${key} = ${JSON.stringify(value)} pttl ${await client.pttl(key)}`);
  }
  for (const id of open.slice(0, 30)) {
    const job = await cluster.queues.agents.getJob(id);
    const state = job ? await job.getState() : 'no job';
    lines.push(
      `${id}: ${state} delayUntil ${job ? job.timestamp + job.delay : '-'} attemptsMade ${job?.attemptsMade} attemptsStarted ${job?.attemptsStarted} processedOn ${job?.processedOn}`,
    );
    for (const e of cluster.events.filter((ev) => ev.data.runId === id)) lines.push(`    ${e.at} ${e.type} ${JSON.stringify(e.data)}`);
  }
  return lines.join('\n');
}

interface Figures {
  chaosSeconds: number;
  runs: number;
  outcomes: Record<string, number>;
  pipelines: number;
  ticks: number;
  executions: number;
  kills: number;
  freezes: number;
  frozenMs: number;
  cancels: Record<string, number>;
  recoveredCopies: number;
  /** Runs of a tick in which a dependency had no run (see the dependency-order check). */
  ticksWithoutDependencyRun: number;
  /** Skipped runs by their first reason (`overlap`, `dependency root cancelled`, ...). */
  skipReasons: Record<string, number>;
}

describe('the joint soak: kills, Redis freezes and cancels under cron and pipelines', () => {
  it(
    `keeps one outcome per run, dependency order and one run per agent at a time through ${CHAOS_SECONDS} s of chaos`,
    async () => {
      const dir = mkdtempSync(path.join(scratch, 'run-'));
      const runLog = path.join(dir, 'log');
      const canFreeze = redis.isOwned;
      if (!canFreeze) noteSkipped(`the Redis freezes of the soak: REDIS_URL=${process.env.REDIS_URL} points at a shared Redis (unset REDIS_URL to freeze it)`);
      const workerEnv = {
        WORKER_CONCURRENCY: '3',
        // A short lock, so a killed worker's runs come back within seconds and a freeze of a few
        // seconds takes locks away; MAX_STALLED_COUNT stays at its default (2).
        LOCK_DURATION_MS: '2500',
        STALLED_INTERVAL_MS: '1000',
        SHUTDOWN_GRACE_MS: '3000',
      };
      const cluster: ProcessCluster = await processCluster(redis, agentsDir, {
        E2E_DIR: dir,
        // Keep the whole history in BullMQ's sets, for the checker.
        COMPLETED_RETAIN: '1000000',
        DLQ_RETAIN: '100000',
      });

      // Workers are started here (not through the cluster) so the test can SIGKILL and restart them.
      const workers: AppProcess[] = [];
      const killedAt = new Map<number, number>(); // pid -> when it was SIGKILLed
      const startWorker = async () => {
        const w = startApp('worker', {
          REDIS_URL: redis.url,
          WERKPILOT_PREFIX: cluster.prefix,
          WERKPILOT_AGENTS: agentsDir,
          E2E_DIR: dir,
          COMPLETED_RETAIN: '1000000',
          DLQ_RETAIN: '100000',
          LOG_LEVEL: 'warn',
          ...workerEnv,
        });
        workers.push(w);
        return w;
      };
      try {
        await Promise.all([startWorker(), startWorker(), startWorker()]);
        await cluster.startScheduler({ LEADER_LEASE_MS: '5000' });
        await waitFor(async () => (await cluster.api<{ system: { workers: unknown[] } }>('GET', '/api/metrics')).body.system?.workers?.length === 3, {
          timeoutMs: 40_000,
          what: 'three workers online',
        });

        const figures: Figures = {
          chaosSeconds: CHAOS_SECONDS,
          runs: 0,
          outcomes: {},
          pipelines: 0,
          ticks: 0,
          executions: 0,
          kills: 0,
          freezes: 0,
          frozenMs: 0,
          cancels: {},
          recoveredCopies: 0,
          ticksWithoutDependencyRun: 0,
          skipReasons: {},
        };
        const triggered = new Set<string>(); // run ids the test created through the API
        const deadline = Date.now() + CHAOS_SECONDS * 1000;
        const chaosOn = () => Date.now() < deadline;
        const pick = <T>(xs: T[]) => xs[Math.floor(Math.random() * xs.length)]!;
        const between = (lo: number, hi: number) => lo + Math.random() * (hi - lo);
        // A request that meets a frozen Redis or a restarting worker may fail: that is the chaos, not a finding.
        const tolerant = async <T>(f: () => Promise<T>): Promise<T | undefined> => {
          try {
            return await f();
          } catch {
            return undefined;
          }
        };

        const pipelines = (async () => {
          while (chaosOn()) {
            const answer = await tolerant(() => cluster.api<{ runId: string; pipelineId: string }>('POST', '/api/agents/root/run', { withDependents: true }));
            if (answer?.status === 202) {
              figures.pipelines += 1;
              for (const name of AGENTS) triggered.add(pipelineRunId(answer.body.pipelineId, name));
            }
            await sleep(between(300, 900));
          }
        })();

        const kills = (async () => {
          await sleep(between(4000, 8000));
          while (chaosOn()) {
            const live = workers.filter((w) => w.proc.exitCode === null && w.proc.signalCode === null);
            const victim = pick(live);
            killedAt.set(victim.proc.pid!, Date.now());
            victim.kill('SIGKILL');
            await victim.exited;
            figures.kills += 1;
            await sleep(between(500, 2000));
            await startWorker();
            await sleep(between(5000, 10_000));
          }
        })();

        const freezes = (async () => {
          if (!canFreeze) return;
          await sleep(between(6000, 12_000));
          while (chaosOn()) {
            // From shorter than the lock (nothing is lost) to well past it (locks are lost, runs recovered).
            const ms = Math.round(between(1000, 5000));
            const thaw = redis.freeze();
            await sleep(ms);
            thaw();
            figures.freezes += 1;
            figures.frozenMs += ms;
            await sleep(between(8000, 15_000));
          }
        })();

        const cancels = (async () => {
          await sleep(2000);
          while (chaosOn()) {
            const finished = new Set(cluster.events.filter((e) => OUTCOME_OF[e.type]).map((e) => String(e.data.runId)));
            const candidates = [...new Set([...triggered, ...cluster.events.map((e) => String(e.data.runId ?? ''))])].filter((id) => /^(repeat|pipeline):/.test(id) && !finished.has(id));
            if (candidates.length > 0) {
              const runId = pick(candidates);
              const answer = await tolerant(() =>
                cluster.api<{ outcome?: string; state?: string; error?: string }>('POST', `/api/runs/${encodeURIComponent(runId)}/cancel`, { reason: 'soak' }),
              );
              const kind = answer === undefined ? 'request failed' : answer.status === 200 ? `${answer.body.outcome} (${answer.body.state})` : String(answer.status);
              figures.cancels[kind] = (figures.cancels[kind] ?? 0) + 1;
            }
            await sleep(between(400, 1400));
          }
        })();

        await Promise.all([pipelines, kills, freezes, cancels]);

        // Quiesce: no more ticks; wait until every run the system knows of has ended.
        for (const name of AGENTS) {
          await waitFor(async () => (await tolerant(() => cluster.api('POST', `/api/agents/${name}/schedule/pause`)))?.status === 200, {
            timeoutMs: 20_000,
            what: `the schedule of ${name} paused`,
          });
        }
        const knownRuns = () => new Set([...triggered, ...cluster.events.map((e) => String(e.data.runId ?? '')).filter((id) => /^(repeat|pipeline):/.test(id))]);
        const unfinished = async () => {
          await cluster.flushEvents();
          const finished = new Set(cluster.events.filter((e) => OUTCOME_OF[e.type]).map((e) => String(e.data.runId)));
          const open = [...knownRuns()].filter((id) => !finished.has(id));
          const counts = await cluster.queues.agents.getJobCounts('active', 'waiting', 'delayed', 'prioritized', 'waiting-children');
          // A tick planned before the pause may still be due: it is a run like any other.
          const queued = Object.values(counts).reduce((a, b) => a + b, 0);
          return { open, queued, counts };
        };
        let last: Awaited<ReturnType<typeof unfinished>> | undefined;
        try {
          await waitFor(
            async () => {
              last = await unfinished();
              return last.open.length === 0 && last.queued === 0;
            },
            {
              timeoutMs: 90_000,
              intervalMs: 500,
              what: () => `every run to end; still open: ${JSON.stringify(last?.open.slice(0, 20))} (${last?.open.length}), queue: ${JSON.stringify(last?.counts)}`,
            },
          );
        } catch (err) {
          throw new Error(`${(err as Error).message}\n${await diagnose(cluster, last?.open ?? [])}`);
        }
        await sleep(1000); // a late event of a copy that lost its lock, if any, would come now
        await cluster.flushEvents();

        // ---- The checker ----
        const events = cluster.events;
        const runIds = [...knownRuns()];
        const outcomes = new Map<string, { kind: string; index: number }[]>();
        events.forEach((e, index) => {
          const kind = OUTCOME_OF[e.type];
          if (!kind) return;
          const id = String(e.data.runId);
          outcomes.set(id, [...(outcomes.get(id) ?? []), { kind, index }]);
        });

        // 1. Exactly one outcome per run.
        const notOne = runIds.filter((id) => (outcomes.get(id) ?? []).length !== 1).map((id) => `${id}: ${(outcomes.get(id) ?? []).map((o) => o.kind).join(', ') || 'none'}`);
        expect(notOne, 'runs without exactly one outcome').toEqual([]);
        const outcomeOf = (id: string) => outcomes.get(id)?.[0];

        // ... and BullMQ's sets say the same: a completed job's returnvalue names its outcome; a failed
        // job is a dead letter. (A run cancelled before it ran has no job left: it was deleted.)
        const completed = await cluster.queues.agents.getJobs(['completed'], 0, -1);
        const failed = await cluster.queues.agents.getJobs(['failed'], 0, -1);
        const disagree: string[] = [];
        const jobOutcome: Record<string, string> = { success: 'success', skipped: 'skipped', cancelled: 'cancelled' };
        for (const job of completed) {
          const fromEvents = outcomeOf(job.id!)?.kind;
          if (jobOutcome[(job.returnvalue as { outcome: string }).outcome] !== fromEvents) disagree.push(`${job.id}: job completed ${job.returnvalue?.outcome}, events say ${fromEvents}`);
        }
        for (const job of failed) if (outcomeOf(job.id!)?.kind !== 'dlq') disagree.push(`${job.id}: job failed, events say ${outcomeOf(job.id!)?.kind}`);
        const jobIds = new Set([...completed, ...failed].map((j) => j.id!));
        for (const id of runIds) {
          const kind = outcomeOf(id)?.kind;
          if (kind !== 'cancelled' && !jobIds.has(id)) disagree.push(`${id}: ${kind} by its events but neither completed nor failed in BullMQ`);
        }
        expect(disagree, 'BullMQ sets against the events').toEqual([]);

        // ... and so do the agents' counters.
        const store = new AgentStateStore({ redis: redis.client(), keys: cluster.keys });
        for (const name of AGENTS) {
          const state = await store.get(name);
          const ofAgent = (kind: string) => runIds.filter((id) => id.split(':').at(-1) === name || id.startsWith(`repeat:${name}:`)).filter((id) => outcomeOf(id)?.kind === kind).length;
          expect({ agent: name, successes: state.successes, skipped: state.skipped, cancelled: state.cancelled }).toEqual({
            agent: name,
            successes: ofAgent('success'),
            skipped: ofAgent('skipped'),
            cancelled: ofAgent('cancelled'),
          });
        }

        // 2. No dependent started before its dependency of the same tick or pipeline completed, and none
        //    whose dependency did not succeed. Events arrive in the order Redis ran the scripts that
        //    published them (one server, one subscriber connection).
        const startsOf = new Map<string, number[]>();
        events.forEach((e, index) => {
          if (e.type === 'agent:started') startsOf.set(String(e.data.runId), [...(startsOf.get(String(e.data.runId)) ?? []), index]);
        });
        const orderViolations: string[] = [];
        const known = new Set(runIds);
        for (const id of runIds) {
          const name = id.startsWith('repeat:') ? id.split(':')[1]! : id.split(':').at(-1)!;
          const starts = startsOf.get(id) ?? [];
          if (starts.length === 0) continue;
          for (const dep of DEPENDS_ON[name] ?? []) {
            const depRun = dependencyRunId(id, dep)!;
            if (id.startsWith('repeat:') && !known.has(depRun)) {
              // The dependency has no run of this tick: BullMQ plans an agent's next tick when its
              // current one starts, so a tick that started late (a worker killed, Redis frozen) skips
              // the ticks that passed meanwhile. The dependent is then judged on its dependency's
              // last run (as for agents on different schedules); its schedule going on is checked below.
              figures.ticksWithoutDependencyRun += 1;
              continue;
            }
            const depOutcome = outcomeOf(depRun);
            if (depOutcome?.kind !== 'success') orderViolations.push(`${id} started although ${depRun} ended ${depOutcome?.kind ?? 'never'}`);
            else if (starts[0]! < depOutcome.index) orderViolations.push(`${id} started (event ${starts[0]}) before ${depRun} completed (event ${depOutcome.index})`);
          }
        }
        expect(orderViolations, 'dependency order').toEqual([]);

        // Every agent's schedule went on through the chaos: no cancel, kill or freeze ended it.
        const lastTick = Object.fromEntries(AGENTS.map((name) => [name, Math.max(0, ...runIds.filter((id) => id.startsWith(`repeat:${name}:`)).map((id) => Number(id.split(':')[2])))]));
        const stopped = AGENTS.filter((name) => lastTick[name]! < deadline - 12_000).map(
          (name) => `${name}: last tick ${new Date(lastTick[name]!).toISOString()}, chaos ended ${new Date(deadline).toISOString()}`,
        );
        expect(stopped, 'schedules that stopped during the chaos').toEqual([]);

        // The agents' own log says the same at the level of executed code: a dependent's code started
        // only after its dependency's code had ended (done) in some execution.
        const executions = readExecutions(runLog);
        const execViolations: string[] = [];
        for (const ex of executions) {
          for (const dep of DEPENDS_ON[ex.agent] ?? []) {
            const depRun = dependencyRunId(ex.runId, dep);
            if (!depRun || (depRun.startsWith('repeat:') && !known.has(depRun))) continue;
            const doneEnds = executions.filter((d) => d.runId === depRun && d.how === 'done').map((d) => d.end!);
            if (doneEnds.length === 0 || Math.min(...doneEnds) > ex.start) execViolations.push(`${ex.runId} (pid ${ex.pid}) started at ${ex.start} before any execution of ${depRun} ended`);
          }
        }
        expect(execViolations, 'dependency order of executed code').toEqual([]);

        // 3. No two runs of one agent executed at once (every agent here allows one at a time). An
        //    execution whose process was killed lasted until the kill.
        const overlapViolations: string[] = [];
        const unended: string[] = [];
        for (const name of AGENTS) {
          const spans = executions
            .filter((e) => e.agent === name)
            .map((e) => {
              const end = e.end ?? killedAt.get(e.pid);
              if (end === undefined) unended.push(`${e.runId} on pid ${e.pid}`);
              return { ...e, end: end ?? Number.POSITIVE_INFINITY };
            })
            .sort((a, b) => a.start - b.start);
          for (let i = 0; i < spans.length; i++) {
            for (let j = i + 1; j < spans.length && spans[j]!.start < spans[i]!.end; j++) {
              if (spans[j]!.runId !== spans[i]!.runId)
                overlapViolations.push(
                  `${name}: ${spans[i]!.runId} (pid ${spans[i]!.pid}, ${spans[i]!.start}..${spans[i]!.end}) and ${spans[j]!.runId} (pid ${spans[j]!.pid}, ${spans[j]!.start}..${spans[j]!.end})`,
                );
            }
          }
        }
        expect(unended, 'executions that never ended (their process was not killed)').toEqual([]);
        expect(overlapViolations, 'two runs of one agent at once').toEqual([]);

        // Figures.
        figures.runs = runIds.length;
        for (const id of runIds) figures.outcomes[outcomeOf(id)!.kind] = (figures.outcomes[outcomeOf(id)!.kind] ?? 0) + 1;
        figures.ticks = new Set(runIds.filter((id) => id.startsWith('repeat:')).map((id) => id.split(':')[2])).size;
        figures.executions = executions.length;
        figures.recoveredCopies =
          [...startsOf.values()].reduce((n, s) => n + s.length, 0) - new Set(events.filter((e) => e.type === 'agent:started').map((e) => `${e.data.runId}#${e.data.attempt}`)).size;
        for (const e of events.filter((ev) => ev.type === 'agent:skipped')) {
          const reason = String((e.data.reasons as string[])[0]).replace(/[0-9a-f-]{36}/g, '…');
          figures.skipReasons[reason] = (figures.skipReasons[reason] ?? 0) + 1;
        }
        console.log(`SOAK FIGURES ${JSON.stringify(figures)}`);

        // The chaos happened, and so did work: otherwise the checks above proved little.
        expect(figures.kills).toBeGreaterThan(0);
        if (canFreeze) expect(figures.freezes).toBeGreaterThan(0);
        expect(figures.outcomes.success ?? 0).toBeGreaterThan(20);
        expect(figures.outcomes.cancelled ?? 0).toBeGreaterThan(0);
      } finally {
        await stopApps(workers.filter((w) => w.proc.exitCode === null && w.proc.signalCode === null));
      }
    },
    (CHAOS_SECONDS + 240) * 1000,
  );
});
