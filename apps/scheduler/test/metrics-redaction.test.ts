import { afterEach, describe, expect, it } from 'vitest';
import { ANONYMOUS_ERROR_LENGTH, WorkerHeartbeat, createLogger, triggerRun } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { basic, bearer, call, startHttpHarness, type Harness } from './_http-harness.js';
import type { DashboardCredentials } from '../src/http/auth.js';

/**
 * The open `/metrics` JSON and what it shows to whom: with dashboard credentials configured, a
 * client that sends none (or wrong ones) gets every figure but no run input, stack trace or host
 * detail; with credentials, or with none configured, it gets everything.
 */

const redis = useTestRedis();
const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

const TOKEN = 'metrics-token-4711';
const USER = { user: 'ops', password: 'pw-of-ops' };
const SECRET_INPUT = 'customer-iban-CH9300762011623852957';
const HOST = 'db-host-17.internal';
/** A long, multi-line error: anonymous clients get its first line, cut to ANONYMOUS_ERROR_LENGTH. */
const LONG_ERROR = `upstream refused: ${'x'.repeat(300)}\nsecond line with ${SECRET_INPUT}`;

/** A harness whose DLQ holds one failed run (with input data and a stack trace) and whose cluster has one live worker. */
async function withFailedRun(credentials: DashboardCredentials): Promise<Harness> {
  const h = await startHttpHarness(redis, { credentials });
  harnesses.push(h);
  await h.startWorker();
  const log = createLogger({ level: 'silent', name: 'test' });
  await new WorkerHeartbeat({
    redis: h.redis,
    keys: h.keys,
    log,
    describe: () => ({ id: `${HOST}:4242:ab12`, host: HOST, pid: 4242, concurrency: 4, active: 0, heapPercent: 10, rssMB: 80, startedAt: new Date(0).toISOString(), version: '0.1.0' }),
  }).beat();
  // Queued directly: without credentials configured the API is read-only.
  const { runId } = await triggerRun({ queue: h.queues.agents, registry: h.registry, retention: { dlqRetain: 100, completedRetain: 100 } }, 'beta', {
    data: { fail: true, message: LONG_ERROR, account: SECRET_INPUT },
  });
  await waitFor(async () => (await h.queues.agents.getJobState(runId)) === 'failed', { what: 'the run to be dead-lettered' });
  return h;
}

function expectComplete(body: any): void {
  const [entry] = body.deadLetterQueue;
  expect(entry).toMatchObject({ agent: 'beta', error: LONG_ERROR, data: { fail: true, account: SECRET_INPUT }, workerId: 'test-worker-0' });
  expect(entry.stacktrace.join('\n')).toContain(LONG_ERROR.split('\n')[0]);
  expect(body.system.workers[0]).toMatchObject({ id: `${HOST}:4242:ab12`, host: HOST, pid: 4242 });
  expect(body.agents.beta.lastError).toBe(LONG_ERROR);
  expect(body.redacted).toBeUndefined();
}

function expectRedacted(body: any, complete: any): void {
  const text = JSON.stringify(body);
  expect(text).not.toContain(SECRET_INPUT);
  expect(text).not.toContain(HOST);
  expect(text).not.toContain('4242');
  expect(text).not.toContain('test-worker-0');
  expect(text).not.toMatch(/\n\s+at |\.ts:\d+/);
  const [entry] = body.deadLetterQueue;
  expect(Object.keys(entry).sort()).toEqual(['agent', 'attemptsMade', 'error', 'failedAt', 'id', 'queuedAt', 'startedAt']);
  expect(entry).toEqual({
    id: complete.deadLetterQueue[0].id,
    agent: 'beta',
    error: `${LONG_ERROR.split('\n')[0]!.slice(0, ANONYMOUS_ERROR_LENGTH)}…`,
    attemptsMade: 1,
    queuedAt: complete.deadLetterQueue[0].queuedAt,
    startedAt: complete.deadLetterQueue[0].startedAt,
    failedAt: complete.deadLetterQueue[0].failedAt,
  });
  expect(body.redacted).toBe(true);
  // Every figure stays: the workers' figures without their identity, every agent's fields.
  const { id: _id, host: _host, pid: _pid, ...workerFigures } = complete.system.workers[0];
  expect(body.system.workers).toEqual([workerFigures]);
  expect(body.system.memory).toBeDefined();
  for (const field of ['executionQueueSize', 'deadLetterQueueSize', 'queues']) expect(body[field], field).toEqual(complete[field]);
  for (const [agent, figures] of Object.entries<any>(complete.agents)) {
    expect(body.agents[agent], agent).toEqual(agent === 'beta' ? { ...figures, lastError: entry.error } : figures);
  }
}

describe('the redaction matrix of GET /metrics (JSON)', () => {
  it('shows everything to everyone when no credentials are configured', async () => {
    const h = await withFailedRun({});
    const anonymous = await call(h.url, '/metrics');
    expect(anonymous.status).toBe(200);
    expectComplete(anonymous.body);
    expectComplete((await call(h.url, '/metrics', { headers: bearer('anything') })).body);
    expectComplete((await call(h.url, '/api/metrics')).body);
  });

  it('with a token configured: complete with it, every figure but no run data, stack or host without it', async () => {
    const h = await withFailedRun({ token: TOKEN });
    const complete = await call(h.url, '/metrics', { headers: bearer(TOKEN) });
    expect(complete.status).toBe(200);
    expectComplete(complete.body);
    expectComplete((await call(h.url, '/metrics', { headers: basic('any-user', TOKEN) })).body);

    for (const headers of [{}, bearer('wrong-token'), basic('ops', 'wrong')]) {
      const anonymous = await call(h.url, '/metrics', { headers });
      expect(anonymous.status, JSON.stringify(headers)).toBe(200);
      expect(anonymous.headers.get('vary')).toMatch(/Authorization/);
      expectRedacted(anonymous.body, complete.body);
    }
    expect((await call(h.url, '/api/metrics')).status).toBe(401);
  });

  it('with a user and password configured: complete with them, redacted without', async () => {
    const h = await withFailedRun(USER);
    const complete = await call(h.url, '/metrics', { headers: basic(USER.user, USER.password) });
    expectComplete(complete.body);
    expectRedacted((await call(h.url, '/metrics')).body, complete.body);
    expectComplete((await call(h.url, '/api/metrics', { headers: basic(USER.user, USER.password) })).body);
  });

  it('gives Prometheus the same exposition with or without credentials: it holds no run data', async () => {
    const h = await withFailedRun({ token: TOKEN });
    const withToken = await call(h.url, '/metrics?format=prometheus', { headers: bearer(TOKEN) });
    const without = await call(h.url, '/metrics?format=prometheus');
    const figures = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('werkpilot_'))
        .join('\n');
    expect(figures(without.text)).toBe(figures(withToken.text));
    expect(without.text).not.toContain(SECRET_INPUT);
    expect(without.text).not.toContain(HOST);
  });
});
