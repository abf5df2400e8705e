import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterQueue } from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { READ_ONLY_MESSAGE } from '../src/http/auth.js';
import { basic, call, startHttpHarness, type Harness, type HarnessOptions } from './_http-harness.js';

/** The run-history API behind the agent, run and DLQ pages: rollups, run logs, pipelines, DLQ groups and bulk actions. */

const redis = useTestRedis();
const CREDENTIALS = { user: 'ops', password: 'history' };
const AUTH = basic(CREDENTIALS.user, CREDENTIALS.password);

const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

async function start(options: HarnessOptions = { credentials: CREDENTIALS }): Promise<Harness> {
  const h = await startHttpHarness(redis, options);
  harnesses.push(h);
  return h;
}

async function runAndWait(h: Harness, agent: string, body: unknown, state: 'completed' | 'failed'): Promise<string> {
  const queued = await call(h.url, `/api/agents/${agent}/run`, { method: 'POST', body, headers: AUTH });
  expect(queued.status).toBe(202);
  await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === state, { timeoutMs: 15_000, what: `${agent} ${state}` });
  return queued.body.runId as string;
}

const failBeta = (h: Harness, message: string) => runAndWait(h, 'beta', { data: { fail: true, message } }, 'failed');

const betaFailures = async (h: Harness) => {
  const res = await call(h.url, '/api/agents/beta/rollups', { headers: AUTH });
  return (res.body.lastHour as { failure: number }[]).reduce((n, p) => n + p.failure, 0);
};

describe('agent rollups, run logs and pipelines', () => {
  it('serves an agent’s charts, a run’s log lines and a pipeline’s graph with states', async () => {
    const h = await start();
    await h.startWorker();
    await runAndWait(h, 'alpha', {}, 'completed');
    await runAndWait(h, 'alpha', {}, 'completed');
    const rollups = await call(h.url, '/api/agents/alpha/rollups', { headers: AUTH });
    expect(rollups.status).toBe(200);
    expect(rollups.body.agent).toBe('alpha');
    expect(rollups.body.lastHour).toHaveLength(60);
    expect(rollups.body.lastDay).toHaveLength(24);
    expect(rollups.body.lastWeek).toHaveLength(168);
    expect(rollups.body.lastHour.reduce((n: number, p: { success: number }) => n + p.success, 0)).toBe(2);
    expect((await call(h.url, '/api/agents/nobody/rollups', { headers: AUTH })).status).toBe(404);

    const pipeline = await call(h.url, '/api/agents/alpha/run', { method: 'POST', body: { withDependents: true }, headers: AUTH });
    const gammaRun = (pipeline.body.runs as { agent: string; runId: string }[]).find((r) => r.agent === 'gamma')!.runId;
    await waitFor(async () => (await h.queues.agents.getJobState(gammaRun)) === 'completed', { timeoutMs: 15_000, what: 'the pipeline' });
    // What ctx.log copies into the run's job log (the harness's agents log at a silent level, so written here as the executor writes it).
    await (await h.queues.agents.getJob(gammaRun))!.log('INFO gamma wrote its rows');
    const logs = await call(h.url, `/api/runs/${encodeURIComponent(gammaRun)}/logs`, { headers: AUTH });
    expect(logs.status).toBe(200);
    expect(logs.body).toEqual({ id: gammaRun, logs: ['INFO gamma wrote its rows'], count: 1 });
    expect((await call(h.url, '/api/runs/999999/logs', { headers: AUTH })).status).toBe(404);

    const graph = await call(h.url, `/api/pipelines/${pipeline.body.pipelineId}`, { headers: AUTH });
    expect(graph.status).toBe(200);
    expect(graph.body.root).toBe('alpha');
    expect(graph.body.isFinished).toBe(true);
    expect(graph.body.runs.map((r: any) => [r.agent, r.state, r.outcome, r.dependsOn])).toEqual([
      ['alpha', 'completed', 'success', []],
      ['beta', 'completed', 'success', ['alpha']],
      ['gamma', 'completed', 'success', ['beta']],
    ]);
    expect((await call(h.url, '/api/pipelines/not-a-pipeline', { headers: AUTH })).status).toBe(404);
    expect((await call(h.url, '/api/pipelines/%20bad', { headers: AUTH })).status).toBe(400);
  });
});

describe('DLQ by cause', () => {
  it('groups dead-lettered runs by agent and normalised error, and replays exactly a group after its preview', async () => {
    const h = await start();
    await h.startWorker();
    const resets = [
      await failBeta(h, 'read ECONNRESET from 10.0.0.7:5432 after 1200 ms'),
      await failBeta(h, 'read ECONNRESET from 10.0.0.9:5432 after 35 ms'),
      await failBeta(h, 'read ECONNRESET from 10.0.0.7:5432 after 7 ms'),
    ];
    const quota = await failBeta(h, 'quota exceeded for account 3f2a9c1e-77aa-4b1e-9c1d-1234567890ab');
    const doomed = [await runAndWait(h, 'doomed', {}, 'failed'), await runAndWait(h, 'doomed', {}, 'failed')];

    const listed = await call(h.url, '/api/dlq/groups', { headers: AUTH });
    expect(listed.status).toBe(200);
    expect(listed.body.total).toBe(6);
    expect(listed.body.scanned).toBe(6);
    const groups = listed.body.groups as { id: string; agent: string; signature: string; count: number; firstSeen: string; lastSeen: string; runIds: string[] }[];
    expect(groups.map((g) => [g.agent, g.signature, g.count])).toEqual([
      ['beta', 'read ECONNRESET from <ip> after <n> ms', 3],
      ['doomed', 'doomed to fail: upstream <n>', 2],
      ['beta', 'quota exceeded for account <uuid>', 1],
    ]);
    const resetGroup = groups[0]!;
    expect([...resetGroup.runIds].sort()).toEqual([...resets].sort());
    expect(Date.parse(resetGroup.firstSeen)).toBeLessThan(Date.parse(resetGroup.lastSeen));
    expect(groups[2]!.runIds).toEqual([quota]);

    // Filters narrow the groups: by agent, by text.
    expect((await call(h.url, '/api/dlq/groups?agent=doomed', { headers: AUTH })).body.groups.map((g: { count: number }) => g.count)).toEqual([2]);
    expect((await call(h.url, '/api/dlq/groups?match=quota', { headers: AUTH })).body.groups).toHaveLength(1);

    const preview = await call(h.url, `/api/dlq/selection?group=${resetGroup.id}`, { headers: AUTH });
    expect(preview.body.count).toBe(3);
    expect(preview.body.agents).toEqual(['beta']);

    // A stale preview replays nothing.
    const stale = await call(h.url, '/api/dlq/replay', { method: 'POST', body: { group: resetGroup.id, expectCount: 2 }, headers: AUTH });
    expect(stale.status).toBe(409);
    expect(stale.body.error).toMatch(/^the selection changed since its preview: 3 dead-lettered runs match now, the preview counted 2/);
    expect(await new DeadLetterQueue(h.queues.agents).size()).toBe(6);

    const before = await betaFailures(h);
    const replay = await call(h.url, '/api/dlq/replay', { method: 'POST', body: { group: resetGroup.id, expectCount: 3 }, headers: AUTH });
    expect(replay.status).toBe(200);
    expect(replay.body.replayed).toBe(3);
    expect([...replay.body.runIds].sort()).toEqual([...resets].sort());
    // Each replayed run runs once more (and fails again, its data says so): exactly three more beta failures.
    await waitFor(async () => (await betaFailures(h)) === before + 3, { timeoutMs: 15_000, what: 'three replayed runs' });
    await waitFor(async () => (await Promise.all(resets.map((id) => h.queues.agents.getJobState(id)))).every((s) => s === 'failed'), { what: 'back in the DLQ' });
    expect(await betaFailures(h)).toBe(before + 3);
    expect(await h.queues.agents.getJobState(quota)).toBe('failed');

    // Delete by filter: the agent's runs only.
    const deletion = await call(h.url, '/api/dlq/delete', { method: 'POST', body: { agent: 'doomed', since: '1h' }, headers: AUTH });
    expect(deletion.body).toEqual({ deleted: 2, runIds: expect.arrayContaining(doomed) });
    expect(await new DeadLetterQueue(h.queues.agents).size()).toBe(4);
  });

  it.each([
    ['POST', '/api/dlq/replay', {}, /^body: name a group, an agent, a time range/],
    ['POST', '/api/dlq/delete', { expectCount: 3 }, /^body: name a group/],
    ['POST', '/api/dlq/replay', { group: 'zz' }, /^body\.group: group ids are 12 hex digits/],
    ['POST', '/api/dlq/replay', { agent: 'beta', since: 'an hour ago' }, /^body\.since: must be an ISO 8601 time/],
    ['POST', '/api/dlq/replay', { agent: 'beta', everything: true }, /^body: Unrecognized key/],
    ['POST', '/api/dlq/replay', { agent: 'beta', expectCount: -1 }, /^body\.expectCount: /],
    ['GET', '/api/dlq/groups?agnet=beta', undefined, /^query: Unrecognized key/],
    ['GET', '/api/dlq/selection?since=2h&until=3h', undefined, /^since: must not be later than until$/],
    ['GET', '/api/dlq/groups?match=', undefined, /^query\.match: must not be empty$/],
  ])('answers 400 for %s %s %j', async (method, path, body, pattern) => {
    const h = await start();
    const res = await call(h.url, path, { method, headers: AUTH, ...(body !== undefined ? { body } : {}) });
    expect(res.status).toBe(400);
    expect(Object.keys(res.body)).toEqual(['error']);
    expect(res.body.error).toMatch(pattern);
  });

  it('read-only: groups and previews are open, replay and delete answer 403', async () => {
    const h = await start({});
    expect((await call(h.url, '/api/dlq/groups')).status).toBe(200);
    expect((await call(h.url, '/api/dlq/selection?agent=beta')).body).toEqual({ count: 0, runIds: [], agents: [] });
    for (const path of ['/api/dlq/replay', '/api/dlq/delete']) {
      const res = await call(h.url, path, { method: 'POST', body: { agent: 'beta' } });
      expect(res.status).toBe(403);
      expect(res.body).toEqual({ error: READ_ONLY_MESSAGE });
    }
  });
});
