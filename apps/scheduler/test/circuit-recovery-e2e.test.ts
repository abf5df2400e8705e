import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CircuitBreaker } from '@werkpilot/shared';
import { useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';
import { FILE_SIGNALS, processCluster } from './_process-cluster.js';

/**
 * The circuit's whole cycle on the real clock, with the real scheduler planning every second and two
 * worker processes: closed → open (a failing upstream) → half-open (one trial, once the rolling
 * window has let the restarts go) → closed (the trial succeeded). The window is shortened to 4 s
 * through CIRCUIT_WINDOW_MS, as an operator would set it; no clock is faked.
 * circuit-breaker.test.ts proves each transition with a test clock.
 */

const redis = useTestRedis();
const WINDOW_MS = 4000;
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-e2e-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

// Fails while the test's `failing` file exists; afterwards each run holds until `release` exists.
const agentsDir = writeAgentsDir({
  'flaky.ts': `import { defineAgent } from '@werkpilot/shared';
${FILE_SIGNALS}
export default defineAgent({
  name: 'flaky',
  schedule: { cron: '* * * * * *' },
  maxRestartsPerHour: 2,
  retry: { attempts: 1 },
  timeoutMs: 60000,
  async run(ctx) {
    if (existsSync(process.env.E2E_DIR + '/failing')) {
      note('fail ' + ctx.runId + ' ' + Date.now());
      throw new Error('upstream answered 503');
    }
    note('start ' + ctx.runId + ' ' + Date.now());
    await until('release', ctx.signal);
    return { ok: true };
  },
});
`,
});

describe('the circuit breaker on the real clock, across processes', () => {
  it('opens after the third restart, lets exactly one trial run through once the window has passed, and closes when it succeeds', async () => {
    const dir = mkdtempSync(path.join(scratch, 'circuit-'));
    writeFileSync(path.join(dir, 'failing'), '');
    const cluster = await processCluster(redis, agentsDir, { E2E_DIR: dir, CIRCUIT_WINDOW_MS: String(WINDOW_MS) });
    await cluster.startWorkers(2);
    await cluster.startScheduler();
    const circuit = new CircuitBreaker({ redis: redis.client(), keys: cluster.keys, windowMs: WINDOW_MS });
    const lines = () => {
      try {
        return readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n').filter(Boolean);
      } catch {
        return [];
      }
    };
    const flakyEvents = (type: string) => cluster.events.filter((e) => e.type === type && e.agent === 'flaky');

    // Three failures in the window: more than 2 restarts opens it.
    const opened = await waitFor(() => flakyEvents('circuit:opened')[0], { timeoutMs: 30_000, what: () => `circuit:opened; log:\n${lines().join('\n')}` });
    expect(opened.data).toMatchObject({ count: 3, maxRestartsPerHour: 2 });
    rmSync(path.join(dir, 'failing'));
    const failures = lines().filter((l) => l.startsWith('fail '));
    expect(failures).toHaveLength(3);
    const firstFailureAt = Number(failures[0]!.split(' ')[2]);

    // Open: ticks are skipped, until the first restart leaves the window and one run takes the trial.
    const trial = await waitFor(
      async () => {
        const status = await circuit.get('flaky');
        return status.state === 'half-open' ? status.trialRunId : undefined;
      },
      { timeoutMs: WINDOW_MS + 20_000, what: () => `the circuit half-open; log:\n${lines().join('\n')}` },
    );
    expect(flakyEvents('agent:skipped').some((e) => (e.data.reasons as string[]).includes('circuit open'))).toBe(true);
    const started = await waitFor(() => lines().find((l) => l.startsWith(`start ${trial} `)), { what: `the trial run ${trial} to start` });
    expect(Number(started.split(' ')[2]) - firstFailureAt, 'the trial waited for the window').toBeGreaterThanOrEqual(WINDOW_MS);

    // While the trial runs, the next two ticks are held off on both workers.
    const skippedBefore = flakyEvents('agent:skipped').length;
    await waitFor(() => flakyEvents('agent:skipped').length >= skippedBefore + 2, { timeoutMs: 15_000, what: 'two more ticks skipped during the trial' });
    expect(lines().filter((l) => l.startsWith('start '))).toEqual([started]);
    expect(await circuit.get('flaky')).toMatchObject({ state: 'half-open', trialRunId: trial });

    writeFileSync(path.join(dir, 'release'), '');
    const closed = await waitFor(() => flakyEvents('circuit:closed')[0], { timeoutMs: 15_000, what: 'circuit:closed' });
    expect(closed.data).toMatchObject({ reason: 'trial run succeeded', runId: trial });
    expect((await circuit.get('flaky')).state).toBe('closed');
    // Closed again: the next tick runs, and succeeds.
    await waitFor(() => flakyEvents('agent:completed').some((e) => e.data.runId !== trial), { timeoutMs: 15_000, what: 'a run after the trial to complete' });
    await cluster.flushEvents();
    expect(flakyEvents('circuit:opened')).toHaveLength(1);
    expect(flakyEvents('circuit:closed')).toHaveLength(1);
  }, 120_000);
});
