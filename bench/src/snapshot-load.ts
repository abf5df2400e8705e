import { fork, type ChildProcess } from 'node:child_process';
import { get as httpGet } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Queue } from 'bullmq';
import { AgentStateStore, addChangeMarkTo, runJobOptions, type Registry } from '@werkpilot/shared';
import type { BenchRedis } from './bench-redis.js';
import type { Measurement } from './measurement.js';
import { RETENTION, openOrchestratorQueues, startDrainingWorker } from './orchestrator.js';
import { addMany } from './raw-bullmq.js';
import { median, preciseNow, sleep, within } from './samples.js';
import type { SnapshotServerReply, SnapshotServerRequest } from './snapshot-server.js';

/**
 * What the metrics endpoints cost at fleet scale, measured against a scheduler HTTP process of its
 * own (snapshot-server.ts) on the scenario's Redis: request time when a request must wait for a
 * fresh build and at a dashboard's polling cadence, body bytes as sent (plain and gzip), Redis
 * commands per request (INFO commandstats, commands inside Lua included), the longest single Redis
 * call (SLOWLOG, execution time in Redis) and the scheduler's event-loop delay during builds; and
 * the runs/s of a concurrent load with and without a dashboard polling.
 */

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'snapshot-server.ts');
/** Runs recorded per agent before anything is measured, so every agent has samples and buckets. */
const SEEDED_RUNS = 5;
/** The overview page polls /api/metrics this often. */
const DASHBOARD_POLL_MS = 2000;
const MAX_AGE_MS = 2000;
const MB = 1024 * 1024;

interface Response {
  status: number;
  ms: number;
  bytes: number;
}

/** A GET that does not decompress: `bytes` is what travelled. */
function get(port: number, pathname: string, headers: Record<string, string>): Promise<Response> {
  const started = preciseNow();
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path: pathname, headers }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => (bytes += chunk.length));
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${pathname} answered ${res.statusCode}`));
        else resolve({ status: res.statusCode, ms: preciseNow() - started, bytes });
      });
    }).on('error', reject);
  });
}

const JSON_GZIP = { accept: 'application/json', 'accept-encoding': 'gzip' };
const JSON_PLAIN = { accept: 'application/json' };
const PROMETHEUS_GZIP = { accept: 'text/plain;version=0.0.4', 'accept-encoding': 'gzip' };
const PROMETHEUS_PLAIN = { accept: 'text/plain;version=0.0.4' };

interface SnapshotServer {
  port: number;
  ask(type: SnapshotServerRequest): Promise<SnapshotServerReply>;
  close(): Promise<void>;
}

async function startSnapshotServer(redis: BenchRedis, prefix: string, size: number, agentHistograms: boolean): Promise<SnapshotServer> {
  const child: ChildProcess = fork(SERVER, [JSON.stringify({ url: redis.url, prefix, size, agentHistograms, maxAgeMs: MAX_AGE_MS })], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const next = (type: SnapshotServerReply['type']) =>
    new Promise<SnapshotServerReply>((resolve, reject) => {
      const onMessage = (message: SnapshotServerReply) => {
        if (message.type !== type) return;
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(message);
      };
      const onExit = (code: number | null) => reject(new Error(`the snapshot server exited with ${code}`));
      child.on('message', onMessage);
      child.once('exit', onExit);
    });
  const listening = await within(next('listening'), 60_000, 'the snapshot server to listen');
  return {
    port: listening.port!,
    ask: (type) => {
      const answer = next(type as SnapshotServerReply['type']);
      child.send(type);
      return answer;
    },
    close: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send('close');
      await within(exited, 20_000, 'the snapshot server to exit').catch(() => child.kill('SIGKILL'));
    },
  };
}

/** Records SEEDED_RUNS runs per agent as the run path does (its recordRun script), with the change mark. */
async function seedRuns(redis: BenchRedis, prefix: string, registry: Registry): Promise<void> {
  const { keys, redis: connection, close } = openOrchestratorQueues(redis.url, prefix);
  const state = new AgentStateStore({ redis: connection, keys });
  const names = registry.names();
  for (let i = 0; i < names.length; i += 500) {
    const pipeline = connection.pipeline();
    for (const agent of names.slice(i, i + 500)) {
      for (let run = 0; run < SEEDED_RUNS; run += 1) {
        const record = { agent, runId: `seed-${run}`, outcome: 'success' as const, durationMs: 10 + run * 7, at: Date.now() };
        state.addRecordTo(pipeline, record);
        addChangeMarkTo(pipeline, keys, [agent]);
      }
    }
    await pipeline.exec();
  }
  await close();
}

/** Redis commands since `before` (INFO commandstats), the measuring calls themselves left out. */
async function commandsSince(redis: BenchRedis, before: Map<string, number>): Promise<number> {
  const after = await redis.commandCounts();
  let total = 0;
  for (const [command, calls] of after) if (!['info', 'slowlog', 'config'].includes(command)) total += calls - (before.get(command) ?? 0);
  return total;
}

/** Logs every command's execution time from now on (SLOWLOG with no threshold). */
async function startSlowlog(admin: ReturnType<BenchRedis['client']>): Promise<void> {
  await admin.config('SET', 'slowlog-log-slower-than', '0');
  await admin.config('SET', 'slowlog-max-len', '400000');
  await admin.slowlog('RESET');
}

/** The longest single call (µs) the scheduler's connection made since `startSlowlog`, and what it was. */
async function longestSchedulerCall(admin: ReturnType<BenchRedis['client']>): Promise<{ micros: number; command: string }> {
  const entries = (await admin.slowlog('GET', -1)) as [number, number, number, string[], string, string][];
  await admin.config('SET', 'slowlog-log-slower-than', '10000');
  await admin.slowlog('RESET');
  let worst = { micros: 0, command: '' };
  for (const [, , micros, args, , client] of entries) {
    if (client === 'scheduler' && micros > worst.micros) worst = { micros, command: `${args[0]} ${args[1] ?? ''}`.slice(0, 60) };
  }
  return worst;
}

/** Rows of the metrics endpoints over a fleet of `registry.size` agents. */
export async function measureSnapshot(redis: BenchRedis, registry: Registry, quick: boolean): Promise<Measurement[]> {
  const size = registry.size;
  const isLargest = size >= 10000;
  const prefix = redis.prefix(`snapshot-${size}`);
  await seedRuns(redis, prefix, registry);
  const admin = redis.client();
  const rows: Measurement[] = [];
  const timeTarget = isLargest ? { target: { on: 'value' as const, max: 250 } } : {};

  for (const agentHistograms of [true, false]) {
    const setting = `per-agent histograms ${agentHistograms ? 'on' : 'off'}`;
    const server = await startSnapshotServer(redis, prefix, size, agentHistograms);
    try {
      // The first build reads every agent once (a scheduler starts it at boot).
      await startSlowlog(admin);
      let before = await redis.commandCounts();
      const first = await get(server.port, '/api/metrics', JSON_GZIP);
      const firstCommands = await commandsSince(redis, before);
      const firstLongest = await longestSchedulerCall(admin);

      // A request that must wait for a fresh build: after a change made through this replica.
      const fresh = async (pathname: string, headers: Record<string, string>) => {
        const samples: Response[] = [];
        for (let i = 0; i < (quick ? 3 : 7); i += 1) {
          await server.ask('invalidate');
          samples.push(await get(server.port, pathname, headers));
        }
        return { ms: median(samples.map((s) => s.ms)), bytes: samples.at(-1)!.bytes };
      };
      const prometheus = await fresh('/metrics', PROMETHEUS_GZIP);
      const prometheusPlain = await get(server.port, '/metrics', PROMETHEUS_PLAIN);
      rows.push({
        metric: `GET /metrics (Prometheus), ${size} agents, ${setting}: request waiting for a fresh build`,
        value: prometheus.ms,
        baseline: null,
        unit: 'ms',
        ...timeTarget,
      });
      rows.push({
        metric: `GET /metrics (Prometheus), ${size} agents, ${setting}: body as Prometheus fetches it (gzip)`,
        value: prometheus.bytes / MB,
        baseline: null,
        unit: 'MB',
        ...(isLargest ? { target: { on: 'value' as const, max: 5 } } : {}),
        detail: { plainBytes: prometheusPlain.bytes, gzipBytes: prometheus.bytes, plainRequestMs: prometheusPlain.ms },
      });
      if (!agentHistograms) {
        rows.at(-1)!.detail!.schedulerRssMB = (await server.ask('loop')).rssMB;
        continue;
      }

      const json = await fresh('/api/metrics', JSON_GZIP);
      const jsonPlain = await get(server.port, '/api/metrics', JSON_PLAIN);
      rows.push({
        metric: `GET /api/metrics (JSON), ${size} agents: request waiting for a fresh build`,
        value: json.ms,
        baseline: null,
        unit: 'ms',
        ...timeTarget,
        detail: { gzipBytes: json.bytes, plainBytes: jsonPlain.bytes, plainRequestMs: jsonPlain.ms },
      });

      // A dashboard polling every 2 s, as the overview page does: builds keep pace in the background.
      await startSlowlog(admin);
      await server.ask('reset-loop');
      before = await redis.commandCounts();
      const polls: number[] = [];
      const count = quick ? 2 : 8;
      for (let i = 0; i < count; i += 1) {
        await sleep(DASHBOARD_POLL_MS);
        polls.push((await get(server.port, '/api/metrics', JSON_GZIP)).ms);
      }
      const perRequest = (await commandsSince(redis, before)) / count;
      const loop = await server.ask('loop');
      const longest = await longestSchedulerCall(admin);
      rows.push({
        metric: `GET /api/metrics, ${size} agents: Redis commands per request, dashboard polling every 2 s`,
        value: perRequest,
        baseline: null,
        unit: 'commands',
        ...(isLargest ? { target: { on: 'value' as const, max: 500 } } : {}),
        detail: { firstBuildCommands: firstCommands, medianPollMs: median(polls), maxPollMs: Math.max(...polls) },
      });
      rows.push({
        metric: `snapshot builds, ${size} agents: longest single Redis call (SLOWLOG)`,
        value: longest.micros / 1000,
        baseline: null,
        unit: 'ms',
        detail: { command: longest.command, firstBuildLongestMs: firstLongest.micros / 1000, firstBuildCommand: firstLongest.command },
      });
      rows.push({
        metric: `snapshot builds, ${size} agents: scheduler event-loop delay p99 while polled`,
        value: loop.p99Ms!,
        baseline: null,
        unit: 'ms',
        detail: { maxMs: loop.maxMs, firstBuildRequestMs: first.ms, schedulerRssMB: loop.rssMB, schedulerCpuShareWhilePolled: loop.cpuMs! / (count * DASHBOARD_POLL_MS) },
      });
    } finally {
      await server.close();
    }
  }
  return rows;
}

/**
 * Runs/s of no-op runs of the fleet's first 200 agents at concurrency 50, with a dashboard polling
 * `/api/metrics` every 2 s on a scheduler HTTP process over the whole fleet, against the same load
 * without it (the baseline). Medians over alternating rounds.
 */
export async function measureThroughputWithDashboard(redis: BenchRedis, registry: Registry, quick: boolean): Promise<Measurement[]> {
  const prefix = redis.prefix('snapshot-load');
  await seedRuns(redis, prefix, registry);
  const server = await startSnapshotServer(redis, prefix, registry.size, true);
  const names = registry.names().slice(0, 200);
  const nameOf = (i: number) => names[i % names.length]!;
  const jobOptions = runJobOptions(registry.require(nameOf(0)), RETENTION);
  const count = quick ? 500 : 10000;
  const results: Record<'quiet' | 'polled', number[]> = { quiet: [], polled: [] };
  const loopWhilePolled: number[] = [];
  const schedulerCpuShare: number[] = [];
  try {
    await get(server.port, '/api/metrics', JSON_GZIP);
    const drain = async (isPolled: boolean) => {
      const { queues, close } = openOrchestratorQueues(redis.url, prefix);
      const queue = queues.agents as unknown as Queue;
      await queue.pause();
      await addMany(queue, nameOf, jobOptions, count);
      const { started, completions, outcomes } = await startDrainingWorker({
        url: redis.url,
        prefix,
        registry,
        count,
        what: `${count} runs with the dashboard ${isPolled ? 'polling' : 'closed'}`,
      });
      let isPolling = isPolled;
      const poller = (async () => {
        while (isPolling) {
          await get(server.port, '/api/metrics', JSON_GZIP);
          await sleep(DASHBOARD_POLL_MS);
        }
      })();
      await server.ask('reset-loop');
      const startedAt = preciseNow();
      await queue.resume();
      await within(completions.done, 120_000 + count * 10, `${count} runs`);
      const seconds = (preciseNow() - startedAt) / 1000;
      isPolling = false;
      await poller;
      const loop = await server.ask('loop');
      if (isPolled) {
        loopWhilePolled.push(loop.p99Ms!);
        schedulerCpuShare.push(loop.cpuMs! / (seconds * 1000));
      }
      await started.close();
      await close();
      outcomes.check();
      return count / seconds;
    };
    if (!quick) await drain(false); // warm-up: JIT, connections, script cache
    for (let round = 0; round < (quick ? 1 : 3); round += 1) {
      for (const isPolled of round % 2 === 0 ? [false, true] : [true, false]) results[isPolled ? 'polled' : 'quiet'].push(await drain(isPolled));
    }
  } finally {
    await server.close();
  }
  return [
    {
      metric: `runs/s at c50 (200 of ${registry.size} agents) with a dashboard polling /api/metrics every 2 s; baseline: no dashboard`,
      value: median(results.polled),
      baseline: median(results.quiet),
      unit: 'runs/s',
      detail: { schedulerEventLoopP99Ms: median(loopWhilePolled), schedulerCpuShareWhilePolled: median(schedulerCpuShare) },
    },
  ];
}
