import { describe, expect, it } from 'vitest';
import { agentSource, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';
import { freePort } from '@werkpilot/shared';

const redis = useTestRedis();
const TOKEN = 'e2e-token';

const agentsDir = writeAgentsDir({
  'flaky.ts': agentSource(
    { name: 'flaky', schedule: { cron: '* * * * * *' }, maxRestartsPerHour: 3, retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 10 } } },
    "throw new Error('endpoint returned 503');",
  ),
  'dependent.ts': agentSource({ name: 'dependent', dependsOn: ['flaky'] }),
});

interface AgentView {
  circuit: string;
  health: string | null;
  healthReasons: string[];
  score: number | null;
  skipped: number;
  restartsLastHour: number;
}

describe('self-healing, as an operator sees it (real processes)', () => {
  it('opens the circuit of a failing agent, skips its dependents, resets on request and reports on demand', async () => {
    const prefix = uniquePrefix();
    const port = await freePort();
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, DASHBOARD_TOKEN: TOKEN };
    const scheduler = startApp('scheduler', { ...env, PORT: String(port), HEALTH_INTERVAL_MS: '300' });
    const worker = startApp('worker', env);
    await Promise.all([scheduler.waitForLog(/dashboard on/, 30_000), worker.waitForLog(/worker online/, 30_000)]);

    const api = async (method: string, path: string) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5000) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const agents = async () => (await api('GET', '/api/metrics')).body.agents as Record<string, AgentView>;

    // The cron ticks fail every second: after more than 3 restarts the circuit opens.
    const opened = await waitFor(
      async () => {
        const a = await agents();
        return a.flaky!.circuit === 'open' && a.flaky!.healthReasons.includes('circuit open') ? a : null;
      },
      { timeoutMs: 30_000, what: 'the circuit of flaky to open and its health to say so' },
    );
    expect(opened.flaky!.health).toBe('unhealthy');
    // The fourth restart (> 3) opens it; later ticks are skipped, not counted.
    expect(opened.flaky!.restartsLastHour).toBe(4);

    const dependentRun = await api('POST', '/api/agents/dependent/run');
    expect(dependentRun.status).toBe(202);
    const run = await waitFor(
      async () => {
        const r = await api('GET', `/api/runs/${String(dependentRun.body.runId)}`);
        return r.status === 200 && JSON.stringify(r.body).includes('skipped') ? r.body : null;
      },
      { timeoutMs: 15_000, what: 'the dependent run to be skipped' },
    );
    expect(JSON.stringify(run)).toContain('dependency flaky unhealthy: circuit open');
    // The snapshot behind /api/metrics may be up to METRICS_SNAPSHOT_MAX_AGE_MS (2 s) old.
    await waitFor(async () => (await agents()).dependent!.skipped >= 1, { what: 'the skipped run in /api/metrics' });

    const reset = await api('POST', '/api/agents/flaky/circuit/reset');
    expect(reset).toMatchObject({ status: 200, body: { agent: 'flaky', circuit: 'closed' } });

    const nightly = await api('POST', '/api/reports/run');
    expect(nightly.status).toBe(202);
    const report = await waitFor(
      async () => {
        const r = await api('GET', '/api/reports/latest');
        return r.status === 200 ? r.body : null;
      },
      { timeoutMs: 15_000, what: 'the on-demand nightly report' },
    );
    expect(report.flagged).toContain('flaky');
    expect((report.agents as Record<string, { failureRate: number; advice: string[] }>).flaky).toMatchObject({ failureRate: 1 });
    expect((report.agents as Record<string, { topSkipCause: unknown }>).dependent!.topSkipCause).toMatchObject({ dependency: 'flaky' });

    await stopApps([scheduler, worker]);
  }, 90_000);
});
