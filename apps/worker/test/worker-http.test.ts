import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { createWorkerMetrics, type Availability } from '@werkpilot/shared';
import { findTool, isMissing } from '@werkpilot/test-support';
import { startWorkerHttp } from '../src/worker-http.js';

const promtool = findTool('promtool', { install: 'apt-get install prometheus', pathVariable: 'PROMTOOL' });
const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
});

async function serve({ isStopping = (): boolean => false, readiness = (): Availability => ({ available: true }) } = {}) {
  let active = 2;
  const metrics = createWorkerMetrics({ activeRuns: () => active });
  const server = await startWorkerHttp(0, { workerId: 'w-1', metrics: () => metrics, readiness, isStopping });
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, metrics, setActive: (n: number) => (active = n) };
}

/** Serves a worker's /metrics after one run of each outcome, and returns the exposition. */
async function exposition(): Promise<string> {
  const { url, metrics } = await serve();
  metrics.outcomeListener({ agent: 'crm-sync', outcome: 'success', durationMs: 120, at: 1, attempt: 1 });
  metrics.outcomeListener({ agent: 'crm-sync', outcome: 'failure', durationMs: 40, at: 2, attempt: 2, error: 'x' });
  metrics.outcomeListener({ agent: 'crm-sync', outcome: 'failure', durationMs: 50, at: 3, attempt: 1, error: 'timeout', timedOut: true });
  metrics.outcomeListener({ agent: 'crm-sync', outcome: 'cancelled', durationMs: 5, at: 4, attempt: 1, error: 'no longer needed' });
  metrics.outcomeListener({ agent: 'crm-sync', outcome: 'skipped', at: 5, error: 'disabled' });
  const res = await fetch(`${url}/metrics`);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return res.text();
}

describe('worker HTTP', () => {
  it("exports this worker's own run counters, retries and duration histogram", async () => {
    const text = await exposition();
    for (const [outcome, n] of [
      ['success', 1],
      ['failure', 1],
      ['timeout', 1],
      ['cancelled', 1],
      ['skipped', 1],
    ] as const) {
      expect(text).toContain(`werkpilot_worker_runs_total{agent="crm-sync",outcome="${outcome}"} ${n}`);
    }
    expect(text).toContain('werkpilot_worker_retries_total{agent="crm-sync"} 1');
    // Durations of executed attempts only: a cancelled run's is not the agent's work.
    expect(text).toContain('werkpilot_worker_run_duration_seconds_count{agent="crm-sync"} 3');
    expect(text).toContain('werkpilot_worker_run_duration_seconds_bucket{le="0.05",agent="crm-sync"} 2');
    expect(text).toContain('werkpilot_worker_active_runs 2');
    expect(text).toContain('nodejs_heap_size_used_bytes');
  });

  it.skipIf(isMissing(promtool))('passes promtool check metrics', async () => {
    const check = spawnSync(promtool.path!, ['check', 'metrics'], { input: await exposition(), encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('answers /healthz with 200 while the process lives (Redis or not) and 503 once it stops; other paths 404', async () => {
    let stopping = false;
    const { url } = await serve({ isStopping: () => stopping, readiness: () => ({ available: false, reason: 'redis unavailable: connection reconnecting' }) });
    const ok = await fetch(`${url}/healthz`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ status: 'ok', workerId: 'w-1' });
    stopping = true;
    const stopped = await fetch(`${url}/healthz`);
    expect(stopped.status).toBe(503);
    expect(await stopped.json()).toMatchObject({ status: 'stopping' });
    const missing = await fetch(`${url}/nothing`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: expect.stringMatching(/serves \/metrics, \/healthz and \/readyz/) });
  });

  it('answers /readyz with 200 when ready and 503 with the reason when not', async () => {
    let verdict: Availability = { available: false, reason: 'redis unavailable: not connected yet' };
    const { url } = await serve({ readiness: () => verdict });
    const waiting = await fetch(`${url}/readyz`);
    expect(waiting.status).toBe(503);
    expect(await waiting.json()).toEqual({ status: 'not ready', workerId: 'w-1', reason: 'redis unavailable: not connected yet' });
    verdict = { available: true };
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', workerId: 'w-1' });
  });
});
