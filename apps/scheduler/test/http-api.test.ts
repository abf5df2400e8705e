import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { READ_ONLY_MESSAGE } from '../src/http/auth.js';
import { basic, bearer, call, startHttpHarness, type Harness, type HarnessOptions } from './_http-harness.js';

const redis = useTestRedis();

const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

const CREDENTIALS = { user: 'ops', password: 'correct horse' };
const AUTH = basic(CREDENTIALS.user, CREDENTIALS.password);

async function start(options: HarnessOptions = { credentials: CREDENTIALS }): Promise<Harness> {
  const harness = await startHttpHarness(redis, options);
  harnesses.push(harness);
  return harness;
}

/** Every error answer is one `{ error }` object: no stack, no other fields. */
function expectCleanError(res: { body: any; text: string }, pattern?: RegExp) {
  expect(Object.keys(res.body)).toEqual(['error']);
  expect(typeof res.body.error).toBe('string');
  expect(res.text).not.toMatch(/\n\s+at |node_modules|\.ts:\d+/);
  if (pattern) expect(res.body.error).toMatch(pattern);
}

/** Runs `agent` through the real worker and waits for it to reach `state`. */
async function runAndWait(h: Harness, agent: string, body: unknown, state: 'completed' | 'failed') {
  const queued = await call(h.url, `/api/agents/${agent}/run`, { method: 'POST', body, headers: AUTH });
  expect(queued.status).toBe(202);
  await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === state, { timeoutMs: 15_000, what: `${agent} ${state}` });
  return queued.body.runId as string;
}

describe('probes', () => {
  it('answers /healthz and /readyz without credentials', async () => {
    const h = await start();
    expect((await call(h.url, '/healthz')).body).toEqual({ status: 'ok' });
    expect((await call(h.url, '/readyz')).status).toBe(200);
  });

  it('answers 503 on /readyz when Redis is not reachable', async () => {
    const h = await start({ credentials: CREDENTIALS, isReady: async () => false });
    const res = await call(h.url, '/readyz');
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ status: 'not ready' });
  });
});

describe('agents API', () => {
  it('lists the agents with registry fields, state and layers', async () => {
    const h = await start();
    const res = await call(h.url, '/api/agents', { headers: AUTH });
    expect(res.status).toBe(200);
    expect(res.body.agents.map((a: { name: string }) => a.name)).toEqual(h.registry.names());
    const beta = res.body.agents.find((a: { name: string }) => a.name === 'beta');
    expect(beta).toMatchObject({ priority: 2, dependencyDepth: 1, dependsOn: ['alpha'], runs: 0, circuit: 'closed', enabled: true });
    expect(res.body.layers[0]).toContain('alpha');
    expect(res.body.shards).toBe(1);
    expect(new Set(res.body.agents.map((a: { shard: number }) => a.shard))).toEqual(new Set([0]));
  });

  it('shows the placement: one shard, the fleet prefix, every agent', async () => {
    const h = await start();
    const res = await call(h.url, '/api/shards', { headers: AUTH });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ count: 1, served: 0 });
    expect(res.body.shards).toHaveLength(1);
    expect(res.body.shards[0]).toMatchObject({ index: 0, prefix: h.keys.prefix, agents: [...h.registry.names()].sort() });
  });

  it('shows one agent with its dependents and last runs; 404 for an unknown one, 400 for a malformed name', async () => {
    const h = await start();
    await h.startWorker();
    const runId = await runAndWait(h, 'alpha', {}, 'completed');
    const res = await call(h.url, '/api/agents/alpha', { headers: AUTH });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ name: 'alpha', runs: 1, successes: 1, dependents: ['beta', 'gamma'] });
    expect(res.body.lastRuns[0]).toMatchObject({ id: runId, agent: 'alpha', state: 'completed' });

    const unknown = await call(h.url, '/api/agents/nobody', { headers: AUTH });
    expect(unknown.status).toBe(404);
    expectCleanError(unknown, /unknown agent nobody/);
    const malformed = await call(h.url, '/api/agents/Not_An_Agent', { headers: AUTH });
    expect(malformed.status).toBe(400);
    expectCleanError(malformed, /^agent: /);
  });

  it('queues a run with data and answers 202 { runId }; the run is visible at /api/runs/:id', async () => {
    const h = await start();
    const res = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body: { data: { hello: 'world' } }, headers: AUTH });
    expect(res.status).toBe(202);
    expect(typeof res.body.runId).toBe('string');
    const run = await call(h.url, `/api/runs/${res.body.runId}`, { headers: AUTH });
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ id: res.body.runId, agent: 'alpha', trigger: 'manual', data: { hello: 'world' }, pipelineId: null });
    expect(['waiting', 'prioritized']).toContain(run.body.state);
    expect(run.body.attempts).toEqual({ made: 0, started: 0, max: 3 });
  });

  it('shows a finished run with its result, attempts and timings', async () => {
    const h = await start();
    await h.startWorker();
    const runId = await runAndWait(h, 'flaky', undefined, 'completed');
    const run = await call(h.url, `/api/runs/${runId}`, { headers: AUTH });
    expect(run.body).toMatchObject({ agent: 'flaky', state: 'completed', error: 'first attempt fails', workerId: 'test-worker-0' });
    expect(run.body.result).toMatchObject({ outcome: 'success', result: { attempt: 2 } });
    expect(run.body.attempts).toMatchObject({ made: 2, max: 2 });
    expect(run.body.timings.durationMs).toBeGreaterThanOrEqual(0);
    expect(Date.parse(run.body.timings.finishedAt)).toBeGreaterThanOrEqual(Date.parse(run.body.timings.queuedAt));
  });

  it('runs a pipeline with withDependents', async () => {
    const h = await start();
    const res = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body: { withDependents: true }, headers: AUTH });
    expect(res.status).toBe(202);
    expect(typeof res.body.pipelineId).toBe('string');
    const run = await call(h.url, `/api/runs/${encodeURIComponent(res.body.runId)}`, { headers: AUTH });
    expect(run.body.pipelineId).toBe(res.body.pipelineId);
  });

  it('refuses bad run bodies with 400 and an unknown agent with 404', async () => {
    const h = await start();
    const cases: [unknown, RegExp][] = [
      [[1, 2], /body/],
      [{ withDependents: 'yes' }, /body\.withDependents/],
      [{ data: 1, extra: true }, /body/],
      [{ data: 'x'.repeat(1024 * 1024 + 10) }, /1 MiB/],
    ];
    // JSON nesting bombs: refused by depth, the deep ones before they are even parsed.
    for (const [depth, pattern] of [
      [101, /^body\.data: must not nest deeper than 100 levels$/],
      [128, /^JSON body nests deeper than 128 levels$/],
      [1_000_000, /^JSON body nests deeper than 128 levels$/],
    ] as const) {
      // `depth` levels of data inside the body's own object.
      const bomb = `{"data":${'['.repeat(depth)}${']'.repeat(depth)}}`;
      const started = performance.now();
      const res = await call(h.url, '/api/agents/alpha/run', { method: 'POST', rawBody: bomb, headers: AUTH });
      expect(res.status, `depth ${depth}`).toBe(400);
      expectCleanError(res, pattern);
      expect(performance.now() - started, `depth ${depth}`).toBeLessThan(1000);
    }
    // Brackets inside strings are text, not nesting.
    const bracketsInText = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body: { data: { note: '['.repeat(500) } }, headers: AUTH });
    expect(bracketsInText.status).toBe(202);
    const deepButFine = await call(h.url, '/api/agents/alpha/run', { method: 'POST', rawBody: `{"data":${'['.repeat(100)}${']'.repeat(100)}}`, headers: AUTH });
    expect(deepButFine.status).toBe(202);
    for (const [body, pattern] of cases) {
      const res = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body, headers: AUTH });
      expect(res.status, JSON.stringify(body).slice(0, 50)).toBe(400);
      expectCleanError(res, pattern);
    }
    const malformed = await call(h.url, '/api/agents/alpha/run', { method: 'POST', rawBody: '{"data":', headers: AUTH });
    expect(malformed.status).toBe(400);
    expectCleanError(malformed, /malformed JSON/);
    const unknown = await call(h.url, '/api/agents/nobody/run', { method: 'POST', body: {}, headers: AUTH });
    expect(unknown.status).toBe(404);
    const tooLarge = await call(h.url, '/api/agents/alpha/run', { method: 'POST', rawBody: JSON.stringify({ data: 'y'.repeat(3 * 1024 * 1024) }), headers: AUTH });
    expect(tooLarge.status).toBe(413);
    expectCleanError(tooLarge);
  });

  it('disables and enables an agent', async () => {
    const h = await start();
    const disabled = await call(h.url, '/api/agents/beta/disable', { method: 'POST', headers: AUTH });
    expect(disabled.body).toEqual({ agent: 'beta', enabled: false });
    expect((await call(h.url, '/api/agents/beta', { headers: AUTH })).body.enabled).toBe(false);
    const enabled = await call(h.url, '/api/agents/beta/enable', { method: 'POST', headers: AUTH });
    expect(enabled.body).toEqual({ agent: 'beta', enabled: true });
    expect((await call(h.url, '/api/agents/beta', { headers: AUTH })).body.enabled).toBe(true);
    expect((await call(h.url, '/api/agents/nobody/disable', { method: 'POST', headers: AUTH })).status).toBe(404);
  });

  it('resets a circuit; 404 for an unknown agent', async () => {
    const h = await start();
    const res = await call(h.url, '/api/agents/alpha/circuit/reset', { method: 'POST', headers: AUTH });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ agent: 'alpha', circuit: 'closed' });
    expect((await call(h.url, '/api/agents/nobody/circuit/reset', { method: 'POST', headers: AUTH })).status).toBe(404);
  });
});

describe('runs API', () => {
  it('answers 404 for an unknown run and 400 for a malformed id', async () => {
    const h = await start();
    const unknown = await call(h.url, '/api/runs/999999', { headers: AUTH });
    expect(unknown.status).toBe(404);
    expectCleanError(unknown, /unknown run 999999/);
    const malformed = await call(h.url, `/api/runs/${encodeURIComponent('bad id!')}`, { headers: AUTH });
    expect(malformed.status).toBe(400);
    expectCleanError(malformed, /^id: /);
  });

  it('cancels a queued run, and answers 409 for a finished one and 404 for an unknown one', async () => {
    const h = await start();
    const job = await h.queues.agents.add('alpha', { agent: 'alpha', trigger: 'manual' }, { delay: 60_000 });
    const cancelled = await call(h.url, `/api/runs/${job.id}/cancel`, { method: 'POST', body: { reason: 'not needed' }, headers: AUTH });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toEqual({ runId: job.id, agent: 'alpha', outcome: 'cancelled', state: 'delayed' });
    expect(await h.queues.agents.getJob(job.id!)).toBeUndefined();

    await h.startWorker();
    const finished = await runAndWait(h, 'alpha', {}, 'completed');
    const conflict = await call(h.url, `/api/runs/${finished}/cancel`, { method: 'POST', headers: AUTH });
    expect(conflict.status).toBe(409);
    expectCleanError(conflict);
    expect((await call(h.url, '/api/runs/424242/cancel', { method: 'POST', headers: AUTH })).status).toBe(404);
    const badReason = await call(h.url, `/api/runs/${finished}/cancel`, { method: 'POST', body: { reason: 42 }, headers: AUTH });
    expect(badReason.status).toBe(400);
  });
});

describe('dead-letter queue API', () => {
  async function fillDlq(h: Harness, count: number): Promise<string[]> {
    await h.startWorker();
    const ids: string[] = [];
    for (let i = 0; i < count; i++) ids.push(await runAndWait(h, 'doomed', { data: { i } }, 'failed'));
    return ids;
  }

  it('lists dead-lettered runs newest first, paged, with error and context', async () => {
    const h = await start();
    const ids = await fillDlq(h, 3);
    const page = await call(h.url, '/api/dlq?limit=2', { headers: AUTH });
    expect(page.status).toBe(200);
    expect(page.body).toMatchObject({ total: 3, offset: 0, limit: 2 });
    expect(page.body.entries.map((e: { id: string }) => e.id)).toEqual([ids[2], ids[1]]);
    expect(page.body.entries[0]).toEqual({
      id: ids[2],
      agent: 'doomed',
      error: 'doomed to fail: upstream 503',
      stacktrace: [expect.stringMatching(/^Error: doomed to fail: upstream 503\n/)],
      data: { i: 2 },
      trigger: 'manual',
      attemptsMade: 1,
      queuedAt: expect.any(String),
      startedAt: expect.any(String),
      failedAt: expect.any(String),
      workerId: 'test-worker-0',
      truncated: [],
      dataBytes: '{"agent":"doomed","trigger":"manual","data":{"i":2}}'.length,
    });
    const next = await call(h.url, '/api/dlq?offset=2&limit=2', { headers: AUTH });
    expect(next.body.entries.map((e: { id: string }) => e.id)).toEqual([ids[0]]);
    const one = await call(h.url, `/api/dlq/${ids[0]}`, { headers: AUTH });
    expect(one.body).toMatchObject({ id: ids[0], agent: 'doomed', data: { i: 0 }, stacktrace: [expect.stringContaining('doomed to fail')] });
    for (const query of ['limit=abc', 'limit=1000', 'offset=-1', 'limit=1.5']) {
      const bad = await call(h.url, `/api/dlq?${query}`, { headers: AUTH });
      expect(bad.status, query).toBe(400);
      expectCleanError(bad, /^query\./);
    }
  });

  it('retries one run, retries all, deletes one and purges; unknown ids answer 404', async () => {
    const h = await start();
    const ids = await fillDlq(h, 4);
    const retried = await call(h.url, `/api/dlq/${ids[0]}/retry`, { method: 'POST', headers: AUTH });
    expect(retried.body).toEqual({ retried: ids[0] });
    // The retried run leaves the failed set (and, failing again, comes back to it).
    await waitFor(async () => (await h.queues.agents.getJob(ids[0]!))?.attemptsStarted !== undefined && (await call(h.url, '/api/dlq', { headers: AUTH })).body.total >= 3);

    const deleted = await call(h.url, `/api/dlq/${ids[1]}`, { method: 'DELETE', headers: AUTH });
    expect(deleted.body).toEqual({ deleted: ids[1] });
    expect(await h.queues.agents.getJob(ids[1]!)).toBeUndefined();

    expect((await call(h.url, '/api/dlq/nope-404/retry', { method: 'POST', headers: AUTH })).status).toBe(404);
    expect((await call(h.url, '/api/dlq/nope-404', { method: 'DELETE', headers: AUTH })).status).toBe(404);
    expect((await call(h.url, '/api/dlq/nope-404', { headers: AUTH })).status).toBe(404);
    expect((await call(h.url, `/api/dlq/${encodeURIComponent('x y')}/retry`, { method: 'POST', headers: AUTH })).status).toBe(400);

    await waitFor(async () => (await h.queues.agents.getFailedCount()) >= 3, { what: 'retried run back in the DLQ' });
    const all = await call(h.url, '/api/dlq/retry', { method: 'POST', headers: AUTH });
    expect(all.status).toBe(200);
    expect(all.body.retried).toBe(3);
    await waitFor(async () => (await h.queues.agents.getFailedCount()) === 3, { timeoutMs: 15_000, what: 'runs failing again' });
    const purged = await call(h.url, '/api/dlq', { method: 'DELETE', headers: AUTH });
    expect(purged.body.deleted).toBe(3);
    expect((await call(h.url, '/api/dlq', { headers: AUTH })).body.total).toBe(0);
  });
});

describe('reads that could be heavy or odd', () => {
  /** Bytes Redis sent to all its clients while `action` ran. */
  async function redisBytesOut(h: Harness, action: () => Promise<unknown>): Promise<number> {
    const sent = async () => Number(/total_net_output_bytes:(\d+)/.exec(await h.redis.info('stats'))?.[1]);
    const before = await sent();
    await action();
    return (await sent()) - before;
  }

  it('lists runs with 900 KiB inputs by their first 2 KiB: kilobytes per request, not megabytes', async () => {
    const h = await start();
    await h.startWorker();
    const payload = 'p'.repeat(900 * 1024);
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await runAndWait(h, 'beta', { data: { fail: true, i, payload } }, 'failed'));
    const finished = await runAndWait(h, 'beta', { data: { i: 99, payload } }, 'completed');

    let page: Awaited<ReturnType<typeof call>> | undefined;
    const pageBytes = await redisBytesOut(h, async () => {
      page = await call(h.url, '/api/dlq?limit=100', { headers: AUTH });
    });
    expect(page!.body.entries).toHaveLength(12);
    expect(page!.text.length).toBeLessThan(100 * 1024);
    expect(pageBytes).toBeLessThan(200 * 1024);
    const newest = page!.body.entries[0];
    expect(newest).toMatchObject({ id: ids[11], agent: 'beta', trigger: 'manual', error: 'beta was told to fail', truncated: ['data'] });
    const stored = JSON.stringify({ agent: 'beta', trigger: 'manual', data: { fail: true, i: 11, payload } });
    expect(newest.dataBytes).toBe(stored.length);
    // The input as far as its first 2 KiB go.
    expect(newest.data).toEqual({ fail: true, i: 11, payload: 'p'.repeat(2048 - stored.indexOf('"payload":"') - '"payload":"'.length) });

    let agent: Awaited<ReturnType<typeof call>> | undefined;
    const agentBytes = await redisBytesOut(h, async () => {
      agent = await call(h.url, '/api/agents/beta', { headers: AUTH });
    });
    expect(agent!.body.lastRuns.map((r: { id: string }) => r.id)).toEqual([finished, ...ids.slice(3).reverse()]);
    expect(agent!.body.lastRuns[0]).toMatchObject({ state: 'completed', trigger: 'manual', result: { outcome: 'success' }, truncated: ['data'] });
    expect(agent!.body.lastRuns[1]).toMatchObject({ state: 'failed', error: 'beta was told to fail', truncated: ['data'] });
    expect(agent!.text.length).toBeLessThan(100 * 1024);
    expect(agentBytes).toBeLessThan(200 * 1024);

    // One run in full is still there to read.
    const one = await call(h.url, `/api/dlq/${ids[0]}`, { headers: AUTH });
    expect(one.body.data.payload).toHaveLength(payload.length);
  }, 60_000);

  it("answers 404 for run ids that name BullMQ's own keys, and leaves those keys alone", async () => {
    const h = await start();
    await h.startWorker();
    await runAndWait(h, 'alpha', {}, 'completed');
    await h.queues.agents.upsertJobScheduler('gamma', { every: 3_600_000 }, { name: 'gamma', data: { agent: 'gamma', trigger: 'cron' } });
    const bullKey = (id: string) => h.queues.agents.toKey(id);
    const ids = ['stalled-check', 'events', 'id', 'meta', 'repeat', 'repeat:gamma', 'wait', 'completed', 'delayed', 'marker', 'de', '1:logs', '1:lock'];
    const existing = [];
    for (const id of ids) if ((await h.redis.exists(bullKey(id))) === 1) existing.push(id);
    expect(existing).toEqual(expect.arrayContaining(['events', 'id', 'meta', 'completed', 'repeat', 'repeat:gamma']));
    const typesBefore = await Promise.all(existing.map((id) => h.redis.type(bullKey(id))));

    const requests: [string, string][] = [];
    for (const id of ids) {
      const path = encodeURIComponent(id);
      requests.push(
        ['GET', `/api/runs/${path}`],
        ['POST', `/api/runs/${path}/cancel`],
        ['GET', `/api/dlq/${path}`],
        ['POST', `/api/dlq/${path}/retry`],
        ['DELETE', `/api/dlq/${path}`],
        ['GET', `/queues/api/queues/agents/${path}`],
        ['GET', `/queues/api/queues/agents/${path}/logs`],
        ['PUT', `/queues/api/queues/agents/${path}/retry`],
        ['PUT', `/queues/api/queues/agents/${path}/clean`],
        ['PATCH', `/queues/api/queues/agents/${path}/priority`],
      );
    }
    for (const [method, path] of requests) {
      const res = await call(h.url, path, { method, headers: AUTH, ...(method === 'PATCH' ? { body: { priority: 1 } } : {}) });
      expect(res.status, `${method} ${path}: ${res.text.slice(0, 200)}`).toBe(404);
      expectCleanError(res);
    }
    expect(await Promise.all(existing.map((id) => h.redis.type(bullKey(id))))).toEqual(typesBefore);
    // Bull Board's queue routes of the same shape still work.
    expect((await call(h.url, '/queues/api/queues/agents/workers', { headers: AUTH })).status).toBe(200);
    expect((await call(h.url, '/queues/api/queues/agents/retry/failed', { method: 'PUT', headers: AUTH })).status).toBe(200);
  });
});

describe('reports API', () => {
  it('answers 404 before the first nightly report, then the latest and the kept ones', async () => {
    const h = await start();
    const none = await call(h.url, '/api/reports/latest', { headers: AUTH });
    expect(none.status).toBe(404);
    expectCleanError(none, /no nightly report yet/);
    expect((await call(h.url, '/api/reports', { headers: AUTH })).body).toEqual({ reports: [] });

    const report = { id: '2026-11-26', generatedAt: new Date().toISOString(), timezone: 'Europe/Zurich', since: null, agents: {}, flagged: [], trimmed: { completedJobs: 0 } };
    await h.reports.save(report as never, { onlyIfAbsent: false });
    const latest = await call(h.url, '/api/reports/latest', { headers: AUTH });
    expect(latest.body).toMatchObject({ id: '2026-11-26' });
    expect((await call(h.url, '/api/reports', { headers: AUTH })).body.reports).toHaveLength(1);
  });
});

describe('authentication', () => {
  const READ = '/api/agents';
  const MUTATE = '/api/agents/alpha/disable';

  it('without credentials: reads are open, mutations answer 403 saying how to enable them, Bull Board is read-only', async () => {
    const h = await start({ credentials: {} });
    expect((await call(h.url, READ)).status).toBe(200);
    expect((await call(h.url, '/')).status).toBe(200);
    const mutate = await call(h.url, MUTATE, { method: 'POST' });
    expect(mutate.status).toBe(403);
    expect(mutate.body).toEqual({ error: READ_ONLY_MESSAGE });
    expect(mutate.body.error).toMatch(/DASHBOARD_TOKEN/);
    expect((await call(h.url, '/api/dlq', { method: 'DELETE' })).status).toBe(403);
    const board = await call(h.url, '/queues/api/queues?activeQueue=agents&status=latest&page=1');
    expect(board.status).toBe(200);
    expect(board.body.queues.every((q: { readOnlyMode: boolean }) => q.readOnlyMode)).toBe(true);
    expect((await call(h.url, '/api/session')).body).toEqual({ authMode: 'none', canMutate: false });
  });

  it('logs a warning at start when no credentials are configured, and none when they are', async () => {
    const capture = createLogger({ level: 'silent', name: 'capture' });
    const warn = vi.spyOn(capture, 'warn');
    await start({ credentials: {}, log: capture });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toMatch(/no dashboard credentials configured.*DASHBOARD_TOKEN/);
    warn.mockClear();
    await start({ credentials: { token: 'x' }, log: capture });
    expect(warn).not.toHaveBeenCalled();
  });

  it('with DASHBOARD_TOKEN: Bearer (or the token as Basic password) is needed for reads and mutations', async () => {
    const token = randomUUID();
    const h = await start({ credentials: { token } });
    for (const [path, method] of [
      [READ, 'GET'],
      [MUTATE, 'POST'],
      ['/', 'GET'],
      ['/queues', 'GET'],
    ] as const) {
      const none = await call(h.url, path, { method });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.headers.get('www-authenticate')).toMatch(/^Basic/);
      expect((await call(h.url, path, { method, headers: bearer('wrong') })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: bearer(token) })).status, `${method} ${path}`).toBeLessThan(300);
    }
    expect((await call(h.url, READ, { headers: basic('anyone', token) })).status).toBe(200);
    expect((await call(h.url, READ, { headers: basic(token, 'x') })).status).toBe(401);
    const board = await call(h.url, '/queues/api/queues?activeQueue=agents&status=latest&page=1', { headers: bearer(token) });
    expect(board.body.queues.every((q: { readOnlyMode: boolean }) => !q.readOnlyMode)).toBe(true);
  });

  it('with DASHBOARD_USER/PASSWORD: Basic is needed; wrong user, password or scheme is refused', async () => {
    const h = await start({ credentials: CREDENTIALS });
    for (const [path, method] of [
      [READ, 'GET'],
      [MUTATE, 'POST'],
    ] as const) {
      expect((await call(h.url, path, { method })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: basic('ops', 'wrong') })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: basic('other', CREDENTIALS.password) })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: bearer(CREDENTIALS.password) })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: { authorization: 'Basic !!!notbase64' } })).status).toBe(401);
      expect((await call(h.url, path, { method, headers: AUTH })).status).toBe(200);
    }
    expect((await call(h.url, '/api/session', { headers: AUTH })).body).toEqual({ authMode: 'basic', canMutate: true });
  });

  it('leaves /metrics, /healthz and /readyz open whatever is configured', async () => {
    const h = await start({ credentials: { token: 't0ken', ...CREDENTIALS } });
    for (const path of ['/metrics', '/metrics?format=prometheus', '/healthz', '/readyz']) {
      expect((await call(h.url, path)).status, path).toBe(200);
    }
    expect((await call(h.url, '/api/metrics')).status).toBe(401);
  });
});

describe("requests another site makes an operator's browser send", () => {
  const DISABLE = '/api/agents/alpha/disable';
  const isEnabled = async (h: Harness) => (await call(h.url, '/api/agents/alpha', { headers: AUTH })).body.enabled as boolean;

  it('refuses a mutation whose body is not JSON with 415, and changes nothing', async () => {
    const h = await start();
    const bodies: [string | undefined, string][] = [
      ['text/plain', '{"data":1}'],
      ['text/plain', ''],
      ['application/x-www-form-urlencoded', 'a=b'],
      ['multipart/form-data; boundary=x', '--x--'],
      [undefined, '{}'],
    ];
    for (const [type, body] of bodies) {
      const headers: Record<string, string> = { ...AUTH };
      if (type) headers['content-type'] = type;
      const res = await fetch(`${h.url}${DISABLE}`, { method: 'POST', headers, body });
      expect(res.status, `${type} ${body}`).toBe(415);
      expect(((await res.json()) as { error: string }).error).toMatch(/^operator actions take a JSON body/);
    }
    expect(await isEnabled(h)).toBe(true);
    for (const [method, path] of [
      ['POST', '/api/dlq/retry'],
      ['DELETE', '/api/dlq'],
      ['POST', '/api/agents/alpha/run'],
      ['POST', '/api/runs/1/cancel'],
    ] as const) {
      const res = await fetch(`${h.url}${path}`, { method, headers: { ...AUTH, 'content-type': 'text/plain' }, body: '{}' });
      expect(res.status, `${method} ${path}`).toBe(415);
    }
  });

  it('accepts a JSON body, a JSON content type without a body, and a bodyless request without a content type', async () => {
    const h = await start();
    expect((await fetch(`${h.url}${DISABLE}`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json; charset=utf-8' }, body: '{}' })).status).toBe(200);
    expect((await fetch(`${h.url}/api/agents/alpha/enable`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' } })).status).toBe(200);
    expect((await fetch(`${h.url}${DISABLE}`, { method: 'POST', headers: AUTH })).status).toBe(200);
    expect(await isEnabled(h)).toBe(false);
  });

  it('refuses a cross-site mutation with 403 whatever credentials it carries, and changes nothing', async () => {
    const h = await start();
    const own = new URL(h.url).host;
    const refused: Record<string, string>[] = [
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'cross-site', origin: h.url },
      { origin: 'https://evil.example' },
      { origin: `http://${own}.evil.example` },
      { origin: 'http://127.0.0.1:1' },
      { origin: 'null' },
      { origin: 'not a url' },
    ];
    for (const headers of refused) {
      const res = await call(h.url, DISABLE, { method: 'POST', body: {}, headers: { ...AUTH, ...headers } });
      expect(res.status, JSON.stringify(headers)).toBe(403);
      expectCleanError(res, /^cross-site request refused/);
    }
    expect(await isEnabled(h)).toBe(true);
    // Reads are not actions: another site cannot read the answers anyway (no CORS headers).
    expect((await call(h.url, '/api/agents', { headers: { ...AUTH, 'sec-fetch-site': 'cross-site' } })).status).toBe(200);
  });

  it("accepts a mutation from the server's own origin, directly or behind a proxy", async () => {
    const h = await start();
    const accepted: Record<string, string>[] = [
      { origin: h.url, 'sec-fetch-site': 'same-origin' },
      { origin: 'https://ops.example.com', 'x-forwarded-host': 'ops.example.com' },
      { 'sec-fetch-site': 'none' },
    ];
    for (const headers of accepted) {
      const res = await call(h.url, DISABLE, { method: 'POST', body: {}, headers: { ...AUTH, ...headers } });
      expect(res.status, JSON.stringify(headers)).toBe(200);
    }
  });

  it('sends the security headers on pages, API answers, errors, probes and Bull Board', async () => {
    const h = await start();
    for (const path of ['/', '/app.js', '/api/agents', '/api/nothing-here', '/healthz', '/metrics', '/queues']) {
      const res = await call(h.url, path, { headers: AUTH });
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp, path).toContain("frame-ancestors 'none'");
      expect(csp, path).toContain("script-src 'self'");
      expect(csp, path).toContain("object-src 'none'");
      expect(csp, path).not.toContain('upgrade-insecure-requests');
      expect(res.headers.get('x-frame-options'), path).toBe('DENY');
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(res.headers.get('referrer-policy'), path).toBe('no-referrer');
      expect(res.headers.get('cross-origin-opener-policy'), path).toBe('same-origin');
      expect(res.headers.get('strict-transport-security'), path).toBeNull();
      expect(res.headers.get('x-powered-by'), path).toBeNull();
    }
    const unauthorised = await call(h.url, '/api/agents');
    expect(unauthorised.status).toBe(401);
    expect(unauthorised.headers.get('x-frame-options')).toBe('DENY');
  });
});

describe('unknown routes', () => {
  it('answers 404 with a JSON error', async () => {
    const h = await start();
    const res = await call(h.url, '/api/nothing-here', { headers: AUTH });
    expect(res.status).toBe(404);
    expectCleanError(res, /not found/);
  });
});
