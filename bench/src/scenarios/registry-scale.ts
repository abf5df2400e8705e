import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildRegistry, freePort, reconcileJobSchedulers, type Registry } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import { fleetDefinitions, writeFleetDir } from '../agent-fleet.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, silentLogger } from '../orchestrator.js';
import { median, preciseNow, sleep, within } from '../samples.js';
import { measureSnapshot, measureThroughputWithDashboard } from '../snapshot-load.js';
import type { Scenario } from '../scenario.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The production binary (plain node on apps/cli/dist; `pnpm bench` builds it first). */
const WERKPILOT_BIN = path.join(REPO_ROOT, 'apps/cli/bin/werkpilot.js');

/**
 * How the control plane scales with the registry: validating and reconciling 1k and 10k scheduled
 * agents, what `/metrics` and `/api/metrics` cost at each size (snapshot-load.ts), what a polling
 * dashboard costs a concurrent load, and a real scheduler's RSS at 1k.
 */
export const registryScale: Scenario = {
  name: 'registry-scale',
  title: 'registry validation, job-scheduler reconcile and the metrics endpoints at 1k/10k agents, runs/s with a dashboard polling, scheduler RSS at 1 and 1k agents, idle worker RSS',
  async run({ quick, redis, progress }) {
    const sizes = quick ? [100, 500] : [1000, 10000];
    const rows: Measurement[] = [];
    let largest: Registry | undefined;
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
      progress(`registry-scale: the metrics endpoints over ${size} agents`);
      rows.push(...(await measureSnapshot(redis, registry, quick)));
      largest = registry;
    }
    progress(`registry-scale: runs/s with and without a dashboard polling, ${largest!.size} agents`);
    rows.push(...(await measureThroughputWithDashboard(redis, largest!, quick)));
    if (!quick) {
      // The fixed cost (Node, bullmq, ioredis, express, prom-client, pino) apart from the agents'.
      progress('registry-scale: scheduler process with 1 agent');
      rows.push(await processRss(redis, 'scheduler', 1, { maxMB: 100 }));
      progress('registry-scale: idle worker process with 1 agent');
      rows.push(await processRss(redis, 'worker', 1));
    }
    progress('registry-scale: scheduler process with 1000 agents');
    // Quick mode reads it at ready (no settling), an upper bound, to stay under a minute.
    rows.push(await processRss(redis, 'scheduler', 1000, { maxMB: 150, settle: !quick }));
    return rows;
  },
};

/**
 * The longest a process is left alone for its RSS to settle. Start-up (module loading, the first
 * snapshot) grows V8's young generation to its maximum (20–30 MB); V8's memory reducer gives it
 * back once the process has been quiet for about 8–20 s, later on a loaded machine. The settled
 * figure is what an operator sizes a container for; the figure at ready is kept in `detail`.
 */
const SETTLE_MAX_MS = 40_000;
/** Settled: this much below the figure at ready, and steady over the last few samples. */
const SETTLED_DROP_MB = 5;

/**
 * RSS of a real `werkpilot <role>` process (the compiled binary, plain node) with `count` unscheduled
 * agent modules: read once ready (a scheduler has answered /readyz and served one snapshot, a worker
 * is online), then every second until it settled (see SETTLE_MAX_MS).
 */
async function processRss(redis: BenchRedis, role: 'scheduler' | 'worker', count: number, { maxMB, settle = true }: { maxMB?: number; settle?: boolean } = {}): Promise<Measurement> {
  const fleet = writeFleetDir(count);
  const port = await freePort();
  const child = spawn(process.execPath, [WERKPILOT_BIN, role], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: redis.prefix(`rss-${role}`),
      WERKPILOT_AGENTS: fleet.dir,
      PORT: String(port),
      WORKER_HTTP_PORT: '0',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const ready = async () => {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`the ${role} exited with ${child.exitCode}: ${output.slice(-500)}`);
        const isReady =
          role === 'scheduler'
            ? await fetch(`http://127.0.0.1:${port}/readyz`).then(
                (r) => r.ok,
                () => false,
              )
            : output.includes('worker online');
        if (isReady) return;
        await sleep(100);
      }
    };
    await within(ready(), 90_000, `the ${role} with ${count} agents to be ready`);
    // Serve a snapshot once (the dashboard polls it), then read RSS.
    if (role === 'scheduler') await fetch(`http://127.0.0.1:${port}/api/metrics`).then((r) => r.arrayBuffer());
    const atReadyMB = readRssMB(child.pid!);
    const samples = [atReadyMB];
    const settleStart = preciseNow();
    const steady = () => samples.length >= 4 && Math.max(...samples.slice(-4)) - Math.min(...samples.slice(-4)) < 1;
    while (settle && preciseNow() - settleStart < SETTLE_MAX_MS && !(atReadyMB - samples.at(-1)! >= SETTLED_DROP_MB && steady())) {
      await sleep(1000);
      samples.push(readRssMB(child.pid!));
    }
    const settled = median(samples.slice(-3));
    const agents = `${count} agent${count === 1 ? '' : 's'}`;
    return {
      metric: role === 'scheduler' ? `scheduler RSS, ${agents}` : `worker RSS, idle, ${agents}`,
      value: settled,
      baseline: null,
      unit: 'MB',
      ...(maxMB ? { target: { on: 'value' as const, max: maxMB } } : {}),
      detail: { atReadyMB: Math.round(atReadyMB * 10) / 10, settledAfterMs: Math.round(preciseNow() - settleStart) },
    };
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
