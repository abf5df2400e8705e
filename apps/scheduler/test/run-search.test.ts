import { afterEach, describe, expect, it } from 'vitest';
import { SEARCH_SCAN_BUDGET } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { basic, call, startHttpHarness, type Harness } from './_http-harness.js';

/** `GET /api/runs`: run search by agent, state, trigger, pipeline, time and text, paged, at bounded cost. */

const redis = useTestRedis();
const CREDENTIALS = { user: 'ops', password: 'search' };
const AUTH = basic(CREDENTIALS.user, CREDENTIALS.password);

const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

async function start(): Promise<Harness> {
  const h = await startHttpHarness(redis, { credentials: CREDENTIALS });
  harnesses.push(h);
  return h;
}

async function runAndWait(h: Harness, agent: string, body: unknown, state: 'completed' | 'failed'): Promise<string> {
  const queued = await call(h.url, `/api/agents/${agent}/run`, { method: 'POST', body, headers: AUTH });
  expect(queued.status).toBe(202);
  await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === state, { timeoutMs: 15_000, what: `${agent} ${state}` });
  return queued.body.runId as string;
}

const search = async (h: Harness, query: string) => {
  const res = await call(h.url, `/api/runs?${query}`, { headers: AUTH });
  expect(res.status, res.text).toBe(200);
  return res.body as { runs: { id: string; agent: string; state: string; trigger: string; pipelineId: string | null; error: string | null }[]; next: string | null; scanned: number };
};

const ids = (page: { runs: { id: string }[] }) => page.runs.map((r) => r.id).sort();

describe('run search', () => {
  it('finds runs by agent, state, trigger, pipeline, time and text in their error', async () => {
    const h = await start();
    await h.startWorker();
    const alphas = [];
    for (let i = 0; i < 3; i++) alphas.push(await runAndWait(h, 'alpha', {}, 'completed'));
    const reset = await runAndWait(h, 'beta', { data: { fail: true, message: 'read ECONNRESET from crm at 10.0.0.7' } }, 'failed');
    const doomed = await runAndWait(h, 'doomed', {}, 'failed');
    const pipeline = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body: { withDependents: true }, headers: AUTH });
    expect(pipeline.status).toBe(202);
    const pipelineRuns = (pipeline.body.runs as { runId: string }[]).map((r) => r.runId);
    await waitFor(async () => (await Promise.all(pipelineRuns.map((id) => h.queues.agents.getJobState(id)))).every((s) => s === 'completed'), { timeoutMs: 15_000, what: 'pipeline' });

    const byText = await search(h, 'q=econnreset');
    expect(ids(byText)).toEqual([reset]);
    expect(byText.runs[0]!.error).toBe('read ECONNRESET from crm at 10.0.0.7');
    expect(byText.next).toBeNull();
    expect(ids(await search(h, `q=${encodeURIComponent(doomed)}`))).toContain(doomed);

    // The pipeline's root is a manual run too; its dependents are pipeline runs.
    expect(ids(await search(h, 'agent=alpha&state=completed&trigger=manual'))).toEqual([...alphas, pipelineRuns[0]!].sort());
    expect(ids(await search(h, 'state=failed'))).toEqual([reset, doomed].sort());
    expect(ids(await search(h, 'agent=beta&state=failed,completed')).length).toBe(2);
    const byPipeline = await search(h, `pipeline=${pipeline.body.pipelineId}`);
    expect(ids(byPipeline)).toEqual([...pipelineRuns].sort());
    expect(ids(await search(h, 'trigger=pipeline'))).toEqual(pipelineRuns.filter((id) => !id.endsWith(':alpha')).sort());

    expect((await search(h, 'since=1h')).runs).toHaveLength(3 + 2 + pipelineRuns.length);
    expect((await search(h, 'until=2020-01-01T00:00:00Z')).runs).toEqual([]);
    // Newest end first: the pipeline's runs ended last.
    const all = await search(h, 'limit=100');
    const ends = all.runs.map((r: any) => Date.parse(r.timings.finishedAt));
    expect(ends).toEqual([...ends].sort((a, b) => b - a));
  });

  it('pages with a cursor: every run once, then next is null', async () => {
    const h = await start();
    await h.startWorker();
    const alphas = new Set<string>();
    for (let i = 0; i < 5; i++) alphas.add(await runAndWait(h, 'alpha', {}, 'completed'));
    const seen: string[] = [];
    let cursor: string | null = '';
    let pages = 0;
    while (cursor !== null) {
      const page = await search(h, `agent=alpha&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.runs.length).toBeLessThanOrEqual(2);
      seen.push(...page.runs.map((r) => r.id));
      cursor = page.next;
      pages++;
    }
    expect(seen.sort()).toEqual([...alphas].sort());
    expect(pages).toBe(3);
    // A run that ends while one pages does not shift the pages: the cursor pinned the time range.
    const first = await search(h, 'agent=alpha&limit=2');
    await runAndWait(h, 'alpha', {}, 'completed');
    const second = await search(h, `agent=alpha&limit=2&cursor=${first.next}`);
    expect(new Set([...ids(first), ...ids(second)]).size).toBe(4);
  });

  it(`examines at most ${SEARCH_SCAN_BUDGET} runs per request and resumes where it stopped`, async () => {
    const h = await start();
    // No worker: 1200 queued gamma runs and one queued alpha run behind them (waiting is FIFO, listed newest first).
    await h.queues.agents.add('alpha', { agent: 'alpha', trigger: 'manual' });
    await h.queues.agents.addBulk(Array.from({ length: 1200 }, () => ({ name: 'gamma', data: { agent: 'gamma', trigger: 'manual' as const } })));
    const first = await search(h, 'agent=alpha&state=waiting');
    expect(first.runs).toEqual([]);
    expect(first.scanned).toBe(SEARCH_SCAN_BUDGET);
    expect(first.next).not.toBeNull();
    const second = await search(h, `agent=alpha&state=waiting&cursor=${first.next}`);
    expect(second.runs.map((r) => r.agent)).toEqual(['alpha']);
    expect(second.scanned).toBe(201);
    expect(second.next).toBeNull();
  });

  it.each([
    ['state=bogus', /^query\.state\.0: each state must be one of active, waiting/],
    ['trigger=sometimes', /^query\.trigger: must be one of cron, manual/],
    ['agent=Not_An_Agent', /^query\.agent: agent names look like/],
    ['since=yesterday', /^query\.since: must be an ISO 8601 time/],
    ['until=2025-13-45T00:00:00Z', /^query\.until: must be an ISO 8601 time/],
    ['since=1h&until=2h', /^since: must not be later than until$/],
    ['limit=0', /^query\.limit: must be at least 1$/],
    ['limit=101', /^query\.limit: /],
    ['limit=ten', /^query\.limit: must be a whole number$/],
    ['agnet=alpha', /^query: Unrecognized key.*agnet/],
    ['q=', /^query\.q: must not be empty$/],
    ['agent=alpha&agent=beta', /^query\.agent: /],
    ['cursor=bm90LWEtY3Vyc29y', /^cursor: not a cursor this API gave/],
    ['cursor=%7B%7D', /^query\.cursor: not a cursor this API gave$/],
  ])('answers 400 naming the parameter for %s', async (query, pattern) => {
    const h = await start();
    const res = await call(h.url, `/api/runs?${query}`, { headers: AUTH });
    expect(res.status).toBe(400);
    expect(Object.keys(res.body)).toEqual(['error']);
    expect(res.body.error).toMatch(pattern);
  });
});
