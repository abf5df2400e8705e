import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildRegistry, freePort, reconcileJobSchedulers, type Registry } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import { fleetDefinitions, writeFleetDir } from '../agent-fleet.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, openOrchestratorQueues, silentLogger } from '../orchestrator.js';
import { preciseNow, sleep, within } from '../samples.js';
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
  title: 'registry validation, job-scheduler reconcile and the metrics endpoints at 1k/10k agents, runs/s with a dashboard polling, scheduler RSS at 1k',
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
      // The fixed cost (Node, bullmq, ioredis, express, pino) apart from the agents'.
      progress('registry-scale: scheduler process with 1 agent');
      const { target: _noTarget, ...fixedCost } = await schedulerRss(redis, 1);
      rows.push(fixedCost);
    }
    progress('registry-scale: scheduler process with 1000 agents');
    rows.push(await schedulerRss(redis, 1000));
    return rows;
  },
};

/** RSS of a real scheduler process (`werkpilot scheduler`, the compiled binary) serving `count` agents. */
async function schedulerRss(redis: BenchRedis, count: number): Promise<Measurement> {
  const fleet = writeFleetDir(count);
  const port = await freePort();
  const child = spawn(process.execPath, [WERKPILOT_BIN, 'scheduler'], {
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
