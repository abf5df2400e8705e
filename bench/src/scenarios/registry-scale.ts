import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentStateStore, buildRegistry, freePort, reconcileJobSchedulers, type Registry } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import { fleetDefinitions, writeFleetDir } from '../agent-fleet.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, silentLogger } from '../orchestrator.js';
import { schedulerHttpApp } from '../scheduler-http.js';
import { median, preciseNow, sleep, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** Runs recorded per agent before the snapshot is timed, so percentiles have samples to sort. */
const SEEDED_RUNS = 5;

/**
 * How the control plane scales with the registry: validating and reconciling 1k and 10k scheduled
 * agents, serving `/metrics` and `/api/metrics` for the largest, and a real scheduler's RSS at 1k.
 */
export const registryScale: Scenario = {
  name: 'registry-scale',
  title: 'registry validation and job-scheduler reconcile at 1k/10k agents, /metrics at 10k, scheduler RSS at 1k',
  async run({ quick, redis, progress }) {
    const sizes = quick ? [100, 500] : [1000, 10000];
    const rows: Measurement[] = [];
    let largest: { registry: Registry; prefix: string } | undefined;
    for (const size of sizes) {
      progress(`registry-scale: ${size} agents`);
      const definitions = fleetDefinitions(size);
      const validateStart = preciseNow();
      const registry = buildRegistry(definitions.map((definition, i) => ({ definition, source: `agent-${i}.mjs` })));
      rows.push({ metric: `registry validation, ${size} agents`, value: preciseNow() - validateStart, baseline: null, unit: 'ms' });

      const prefix = redis.prefix(`scale-${size}`);
      const { queues, close } = openOrchestratorQueues(redis.url, prefix);
      const log = silentLogger('scheduler');
      const first = preciseNow();
      await reconcileJobSchedulers({ queue: queues.agents, registry, retention: RETENTION, log });
      rows.push({
        metric: `reconcile, ${size} agents (all new)`,
        value: preciseNow() - first,
        baseline: null,
        unit: 'ms',
        ...(size >= 10000 ? { target: { on: 'value' as const, max: 5000 } } : {}),
      });
      const again = preciseNow();
      await reconcileJobSchedulers({ queue: queues.agents, registry, retention: RETENTION, log });
      rows.push({ metric: `reconcile, ${size} agents (unchanged)`, value: preciseNow() - again, baseline: null, unit: 'ms' });
      await close();
      largest = { registry, prefix };
    }
    rows.push(...(await snapshotResponseTimes(redis, largest!.registry, largest!.prefix, quick ? 3 : 7)));
    if (!quick) {
      // The fixed cost (Node, the tsx loader, bullmq, express, Bull Board) apart from the agents'.
      progress('registry-scale: scheduler process with 1 agent');
      const { target: _noTarget, ...fixedCost } = await schedulerRss(redis, 1);
      rows.push(fixedCost);
    }
    progress('registry-scale: scheduler process with 1000 agents');
    rows.push(await schedulerRss(redis, 1000));
    return rows;
  },
};

/** Median response time of the metrics endpoints of `createHttpApp`, in process, over the registry. */
async function snapshotResponseTimes(redis: BenchRedis, registry: Registry, prefix: string, requests: number): Promise<Measurement[]> {
  const { queues, keys, redis: connection, close } = openOrchestratorQueues(redis.url, prefix);
  const state = new AgentStateStore({ redis: connection, keys });
  const names = registry.names();
  for (let i = 0; i < names.length; i += 500) {
    const pipeline = connection.pipeline();
    for (const agent of names.slice(i, i + 500)) {
      for (let run = 0; run < SEEDED_RUNS; run += 1) state.addRecordTo(pipeline, { agent, runId: `seed-${run}`, outcome: 'success', durationMs: 10 + run, at: Date.now() });
    }
    await pipeline.exec();
  }
  const { app, close: closeApp } = schedulerHttpApp({ redis: connection, keys, queues, registry });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  /** Median response time over `requests` (after one warm-up), plus the body size and Redis commands of one request. */
  const time = async (pathname: string, accept: string): Promise<{ ms: number; detail: Record<string, number> }> => {
    const get = async () => {
      const response = await fetch(base + pathname, { headers: { accept } });
      const body = await response.arrayBuffer();
      if (!response.ok) throw new Error(`GET ${pathname} answered ${response.status}`);
      return body.byteLength;
    };
    const before = await redis.commandCounts();
    const bytes = await get();
    const after = await redis.commandCounts();
    let commands = 0;
    for (const [command, calls] of after) if (command !== 'info') commands += calls - (before.get(command) ?? 0);
    const samples: number[] = [];
    for (let i = 0; i < requests; i += 1) {
      const start = preciseNow();
      await get();
      samples.push(preciseNow() - start);
    }
    return { ms: median(samples), detail: { responseBytes: bytes, redisCommandsPerRequest: commands } };
  };
  const target = { on: 'value' as const, max: 250 };
  const size = registry.size;
  const json = await time('/api/metrics', 'application/json');
  const prometheus = await time('/metrics', 'text/plain;version=0.0.4');
  const rows: Measurement[] = [
    { metric: `GET /api/metrics (JSON), ${size} agents`, value: json.ms, baseline: null, unit: 'ms', target, detail: json.detail },
    { metric: `GET /metrics (Prometheus), ${size} agents`, value: prometheus.ms, baseline: null, unit: 'ms', target, detail: prometheus.detail },
  ];
  await new Promise((resolve) => server.close(resolve));
  await closeApp();
  await close();
  return rows;
}

/** RSS of a real scheduler process (`apps/scheduler/src/main.ts` via tsx) serving `count` agents. */
async function schedulerRss(redis: BenchRedis, count: number): Promise<Measurement> {
  const fleet = writeFleetDir(count);
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'apps/scheduler/src/main.ts')], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: redis.prefix('rss'),
      WERKPILOT_AGENTS: fleet.dir,
      PORT: String(port),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const ready = async () => {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`the scheduler exited with ${child.exitCode}: ${stderr.slice(-500)}`);
        const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
        if (ok) return;
        await sleep(100);
      }
    };
    await within(ready(), 90_000, `the scheduler with ${count} agents to be ready`);
    // Serve a snapshot once (the dashboard polls it), let the boot settle, then read RSS.
    await fetch(`http://127.0.0.1:${port}/api/metrics`).then((r) => r.arrayBuffer());
    await sleep(1000);
    return { metric: `scheduler RSS, ${count} agent${count === 1 ? '' : 's'}`, value: readRssMB(child.pid!), baseline: null, unit: 'MB', target: { on: 'value', max: 150 } };
  } finally {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
    fleet.remove();
  }
}

function readRssMB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`cannot read the RSS of process ${pid}`);
  return kb / 1024;
}
