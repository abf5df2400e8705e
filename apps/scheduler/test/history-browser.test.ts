import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { REPO_ROOT, agentSource, findTool, isMissing, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';
import { freePort } from '@werkpilot/shared';

/**
 * The run-history pages in headless Debian Chromium against a real scheduler and worker: the agent
 * page's charts, run search, a pipeline run's page with its graph, DLQ replay by group from the
 * page, keyboard reach of every action, and read-only mode on a second replica without credentials.
 * Screenshots go to test-results/, or to docs/images with WERKPILOT_SCREENSHOTS=docs (the README's).
 */
const CHROMIUM = findTool('chromium', { install: 'apt-get install -y chromium', pathVariable: 'CHROMIUM_PATH', aliases: ['chromium-browser'] });
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SCREENSHOTS = process.env.WERKPILOT_SCREENSHOTS === 'docs' ? path.join(REPO_ROOT, 'docs', 'images') : path.join(REPO_ROOT, 'test-results');
const USER = 'operator';
const PASSWORD = 'history-browser-password';
const AUTH = { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` };

const redis = useTestRedis();
const agentsDir = writeAgentsDir({
  'source.ts': agentSource(
    { name: 'source', priority: 2, schedule: { cron: '0 3 * * *', tz: 'Europe/Zurich' }, retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 500 } } },
    "const rows = 3 + Math.floor(Math.random() * 5); await new Promise((r) => setTimeout(r, 5 + Math.random() * 40)); ctx.log.info({ rows }, 'fetched rows from the CRM'); return { rows };",
  ),
  'transform.ts': agentSource({ name: 'transform', dependsOn: ['source'] }, "ctx.log.info('normalised addresses'); return { ok: true };"),
  'sink.ts': agentSource({ name: 'sink', dependsOn: ['transform'], timeoutMs: 5000 }, 'await new Promise((r) => setTimeout(r, 20)); return { written: 1 };'),
  'flappy.ts': agentSource(
    { name: 'flappy', retry: { attempts: 1 }, overlap: 'queue' },
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the agent's source code, written to a file; its template literal is evaluated there
    "const d = ctx.data ?? {}; if (d.fail === 'reset') throw new Error(`read ECONNRESET from 10.0.0.${d.host ?? 7}:5432 after ${d.ms ?? 12} ms`); if (d.fail === 'quota') throw new Error(`quota exceeded for account ${d.account ?? 42}`); return { ok: true };",
  ),
});

let scheduler: AppProcess;
let worker: AppProcess;
let readOnly: AppProcess | undefined;
let baseUrl: string;
let readOnlyUrl: string;
let env: Record<string, string>;

const api = async (path: string, init: RequestInit = {}) => {
  const res = await fetch(`${baseUrl}${path}`, { ...init, headers: { ...AUTH, 'content-type': 'application/json', ...(init.headers ?? {}) } });
  return { status: res.status, body: (await res.json()) as any };
};

async function run(agent: string, body: unknown = {}): Promise<string> {
  const queued = await api(`/api/agents/${agent}/run`, { method: 'POST', body: JSON.stringify(body) });
  expect(queued.status).toBe(202);
  await waitFor(async () => ['completed', 'failed'].includes((await api(`/api/runs/${encodeURIComponent(queued.body.runId)}`)).body.state), { timeoutMs: 20_000, what: `${agent} to end` });
  return queued.body.runId as string;
}

const failures = async (agent: string) => ((await api(`/api/agents/${agent}/rollups`)).body.lastHour as { failure: number }[]).reduce((n, p) => n + p.failure, 0);

beforeAll(async () => {
  const [port, roPort] = await Promise.all([freePort(), freePort()]);
  env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir };
  worker = startApp('worker', env);
  scheduler = startApp('scheduler', { ...env, PORT: String(port), DASHBOARD_USER: USER, DASHBOARD_PASSWORD: PASSWORD });
  baseUrl = `http://127.0.0.1:${port}`;
  readOnlyUrl = `http://127.0.0.1:${roPort}`;
  await Promise.all([scheduler.waitForLog(/dashboard on/, 40_000), worker.waitForLog(/worker online/, 40_000)]);
  readOnly = startApp('scheduler', { ...env, PORT: String(roPort) });
  await readOnly.waitForLog(/dashboard on/, 40_000);
}, 90_000);

afterAll(async () => {
  await stopApps([scheduler, worker, readOnly].filter((p): p is AppProcess => p !== undefined));
}, 60_000);

describe.skipIf(isMissing(CHROMIUM))('run-history pages in headless Chromium', () => {
  let browser: Browser;
  let context: BrowserContext;
  const pageErrors: string[] = [];

  const open = async (url: string, ctx = context): Promise<Page> => {
    const page = await ctx.newPage();
    page.on('pageerror', (err) => pageErrors.push(`${url}: ${err.message}`));
    // A failed load shows as a response; everything else the console reports as an error (a CSP refusal) counts.
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(`${url}: console: ${message.text()}`);
    });
    // Only the nightly report may be missing (404 until the first nightly run).
    page.on('response', (res) => {
      if (res.status() >= 400 && !res.url().endsWith('/api/reports/latest')) pageErrors.push(`${url}: ${res.status()} ${res.url()}`);
    });
    await page.goto(url);
    return page;
  };

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM.path!, args: CHROMIUM_ARGS });
    context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, httpCredentials: { username: USER, password: PASSWORD } });
    mkdirSync(SCREENSHOTS, { recursive: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    // No page threw and none was refused anything by the Content Security Policy.
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it('renders the agent page’s charts with data after runs, its recent runs and its definition', async () => {
    const runs: string[] = [];
    for (let i = 0; i < 5; i++) runs.push(await run('source'));
    const page = await open(`${baseUrl}/agents/source`);
    const outcomes = page.locator('#outcome-chart svg[data-chart="outcomes"]');
    await outcomes.waitFor();
    await waitFor(async () => (await outcomes.getAttribute('data-total')) === '5', { what: 'five runs in the last hour chart' });
    expect(await outcomes.getAttribute('data-failures')).toBe('0');
    expect(await page.locator('#outcome-chart rect.success').count()).toBeGreaterThan(0);
    expect(Number(await page.locator('#duration-chart svg[data-chart="durations"]').getAttribute('data-samples'))).toBeGreaterThan(0);
    expect(await page.locator('#duration-chart path.line.p95, #duration-chart circle.dot.p95').count()).toBeGreaterThan(0);
    // 24 h and 7 days hold the same five runs.
    for (const range of ['lastDay', 'lastWeek']) {
      await page.locator(`button[data-range="${range}"]`).click();
      await expect(page.locator('#outcome-chart svg').getAttribute('data-total')).resolves.toBe('5');
      expect(await page.locator(`button[data-range="${range}"]`).getAttribute('aria-pressed')).toBe('true');
    }
    await page.locator('button[data-range="lastHour"]').click();

    // The five runs, and the next cron tick's run waiting (delayed) for 03:00.
    const listed = await page.locator('#recent-runs tbody tr[data-run]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-run')!));
    expect(listed.filter((id) => !id.startsWith('repeat:source:')).sort()).toEqual([...runs].sort());
    expect(listed.length - runs.length).toBeLessThanOrEqual(1);
    expect(await page.locator(`#recent-runs tr[data-run="${runs[0]}"]`).innerText()).toMatch(/success\s+manual\s+\d+ ms\s+1\/2/);
    const definition = await page.locator('#definition').innerText();
    expect(definition).toMatch(/Schedule\s+cron 0 3 \* \* \* \(Europe\/Zurich\)/);
    expect(definition).toMatch(/Needed by\s+transform/);
    expect(definition).toMatch(/Retry\s+2 attempts, exponential from 500 ms/);
    expect(await page.locator('#health').innerText()).toMatch(/Boot\s+\S+/);
    await page.locator('#definition a[href="/agents/transform"]').waitFor();
    // The agent's boot verdict is in the bus history.
    await page.locator('#history li').filter({ hasText: 'boot:agent' }).waitFor();
    expect(await page.locator('#history li').filter({ hasText: 'boot:agent' }).innerText()).toMatch(/boot:agent\s+ok \(layer 0\)/);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'agent-page.png'), fullPage: true });

    // Linked from the overview.
    const overview = await open(`${baseUrl}/`);
    await overview.locator('#agents a[href="/agents/source"]').click();
    await overview.waitForURL(`${baseUrl}/agents/source`);
    await overview.close();
    await page.close();
  }, 120_000);

  it('finds a run by text in its error', async () => {
    const reset = await run('flappy', { data: { fail: 'reset', host: 9, ms: 3100 } });
    await run('flappy', { data: { fail: 'quota' } });
    await run('flappy');
    const page = await open(`${baseUrl}/runs`);
    await page.locator('#f-q').fill('econnreset');
    await page.locator('#search-button').click();
    await waitFor(async () => (await page.locator('#results tbody tr[data-run]').count()) === 1, { what: 'one search result' });
    expect(await page.locator('#results tbody tr[data-run]').getAttribute('data-run')).toBe(reset);
    expect(await page.locator('#results tbody tr').innerText()).toMatch(/flappy\s+failed\s+manual[\s\S]*read ECONNRESET from 10\.0\.0\.9:5432 after 3100 ms/);
    expect(page.url()).toBe(`${baseUrl}/runs?q=econnreset`);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'runs-search.png'), fullPage: true });

    // The result links to the run page, which shows the error with its stack trace.
    await page.locator(`#results a[href="/runs/${encodeURIComponent(reset)}"]`).click();
    await page.locator('#error').waitFor();
    expect(await page.locator('#error').innerText()).toBe('read ECONNRESET from 10.0.0.9:5432 after 3100 ms');
    expect(await page.locator('#stack').innerText()).toMatch(/^Error: read ECONNRESET[\s\S]*at /);
    await page.locator('#attempts li[data-attempt="1"]').waitFor();
    expect(await page.locator('#attempts').innerText()).toMatch(/^attempt 1 failed in \d+ ms \S+ on \S+\nread ECONNRESET from 10\.0\.0\.9:5432 after 3100 ms$/);
    expect(await page.locator('#input').innerText()).toContain('"fail": "reset"');
    await page.close();
  }, 120_000);

  it('shows a pipeline run’s page with the pipeline graph and each run’s state, linked across', async () => {
    const queued = await api('/api/agents/source/run', { method: 'POST', body: JSON.stringify({ withDependents: true }) });
    const runs = queued.body.runs as { agent: string; runId: string }[];
    const sinkRun = runs.find((r) => r.agent === 'sink')!.runId;
    await waitFor(async () => (await api(`/api/runs/${encodeURIComponent(sinkRun)}`)).body.state === 'completed', { timeoutMs: 20_000, what: 'the pipeline' });
    const transformRun = runs.find((r) => r.agent === 'transform')!.runId;
    const page = await open(`${baseUrl}/runs/${encodeURIComponent(transformRun)}`);
    await page.locator('#pipeline-graph a.node').first().waitFor();
    const nodes = await page
      .locator('#pipeline-graph a.node')
      .evaluateAll((els) => els.map((el) => [el.getAttribute('data-agent'), el.getAttribute('data-state'), el.classList.contains('current')]));
    expect(nodes).toEqual([
      ['source', 'success', false],
      ['transform', 'success', true],
      ['sink', 'success', false],
    ]);
    expect(await page.locator('#pipeline-graph path.edge').count()).toBe(2);
    expect(await page.locator('#run-fields').innerText()).toMatch(new RegExp(`Trigger\\s+pipeline\\s+Pipeline\\s+${queued.body.pipelineId}`));
    expect(await page.locator('#logs').innerText()).toMatch(/normalised addresses/);
    expect(await page.locator('#timings').innerText()).toMatch(/Queued[\s\S]*Waited[\s\S]*Started[\s\S]*Ended[\s\S]*Duration/);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'run-page.png'), fullPage: true });
    // A node is a link to that run's page.
    await page.locator('#pipeline-graph a.node[data-agent="source"]').click();
    await page.waitForURL(`${baseUrl}/runs/${encodeURIComponent(runs[0]!.runId)}`);
    await page.locator('#logs').filter({ hasText: 'fetched rows from the CRM' }).waitFor();
    await page.close();
  }, 120_000);

  it('replays a DLQ group from the page: exactly the group’s runs run again', async () => {
    await api('/api/dlq', { method: 'DELETE' });
    const resets: string[] = [];
    for (const [host, ms] of [
      [1, 10],
      [2, 2500],
      [3, 40],
    ]) {
      resets.push(await run('flappy', { data: { fail: 'reset', host, ms } }));
    }
    const quota = await run('flappy', { data: { fail: 'quota', account: 77 } });
    const quotaFailedAt = (await api(`/api/runs/${quota}`)).body.timings.finishedAt;
    const page = await open(`${baseUrl}/dlq`);
    const group = page.locator('#groups tbody tr[data-group]').filter({ hasText: 'read ECONNRESET from <ip> after <n> ms' });
    await group.waitFor();
    expect(await group.locator('[data-count]').innerText()).toBe('3');
    expect(await page.locator('#groups tbody tr[data-group]').count()).toBe(2);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dlq-groups.png'), fullPage: true });

    const before = await failures('flappy');
    await group.locator('button[data-action="replay"]').click();
    await page.locator('#confirm[open]').waitFor();
    expect(await page.locator('#confirm-text').innerText()).toMatch(/^Replay 3 dead-lettered runs \(group [0-9a-f]{12}\)\?/);
    const replayed = page.waitForResponse((res) => res.url().endsWith('/api/dlq/replay'));
    await page.locator('#confirm-ok').click();
    const answer = await (await replayed).json();
    expect(answer.replayed).toBe(3);
    expect([...answer.runIds].sort()).toEqual([...resets].sort());
    await page.locator('#toast').filter({ hasText: 'replayed 3 runs' }).waitFor();
    // Each replayed run ran once more and failed again (its data says so): exactly three new failures.
    await waitFor(async () => (await failures('flappy')) === before + 3, { timeoutMs: 20_000, what: 'three replayed runs to fail again' });
    await waitFor(async () => (await Promise.all(resets.map(async (id) => (await api(`/api/runs/${id}`)).body.state))).every((s) => s === 'failed'), {
      what: 'the replayed runs back in the DLQ',
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await failures('flappy')).toBe(before + 3);
    expect((await api(`/api/runs/${quota}`)).body.timings.finishedAt).toBe(quotaFailedAt);
    await page.close();
  }, 120_000);

  it('reaches every action, link and field of each page with the keyboard', async () => {
    const { body } = await api('/api/runs?state=failed&limit=1');
    const failedRun = body.runs[0].id as string;
    for (const url of [`${baseUrl}/agents/source`, `${baseUrl}/runs`, `${baseUrl}/runs/${encodeURIComponent(failedRun)}`, `${baseUrl}/dlq?agent=flappy`]) {
      const page = await open(url);
      await page.locator('#mode').filter({ hasText: 'operator' }).waitFor();
      await page.waitForLoadState('networkidle');
      // Runs in the page (no DOM types in this project's compile): every visible, enabled control, numbered.
      const targets = await page.evaluate(() => {
        const all = [...(globalThis as any).document.querySelectorAll('main button, main a[href], main input, main select, header a[href]')] as any[];
        for (const [i, el] of all.entries()) el.dataset.kb = String(i);
        return all.filter((el) => !el.disabled && el.offsetParent !== null).map((el) => el.dataset.kb as string);
      });
      expect(targets.length).toBeGreaterThan(5);
      const reached = new Set<string>();
      for (let i = 0; i < targets.length + 40 && reached.size < targets.length; i++) {
        await page.keyboard.press('Tab');
        const kb = await page.evaluate(() => (globalThis as any).document.activeElement?.dataset?.kb as string | undefined);
        if (kb !== undefined) reached.add(kb);
      }
      const missed = targets.filter((t) => !reached.has(t));
      expect(missed, `${url}: not reached by Tab`).toEqual([]);
      if (url.includes('/dlq')) {
        // The confirmation is keyboard-operable too: Enter opens it with the focus on Cancel, Escape closes it, nothing happens.
        const before = (await api('/api/dlq')).body.total;
        await page.locator('#groups button[data-action="replay"]').first().focus();
        await page.keyboard.press('Enter');
        await page.locator('#confirm[open]').waitFor();
        expect(await page.evaluate(() => (globalThis as any).document.activeElement?.id)).toBe('confirm-cancel');
        await page.keyboard.press('Tab');
        expect(await page.evaluate(() => (globalThis as any).document.activeElement?.id)).toBe('confirm-ok');
        await page.keyboard.press('Escape');
        await page.locator('#confirm:not([open])').waitFor({ state: 'attached' });
        expect((await api('/api/dlq')).body.total).toBe(before);
      }
      await page.close();
    }
  }, 120_000);

  it('read-only: every page shows, with actions disabled and the reason on hover', async () => {
    const anonymous = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const { body } = await api('/api/runs?state=failed&limit=1');
    for (const path of ['/agents/flappy', `/runs/${encodeURIComponent(body.runs[0].id)}`, '/dlq?agent=flappy', '/runs', '/']) {
      const page = await open(`${readOnlyUrl}${path}`, anonymous);
      await page.locator('#mode').filter({ hasText: 'read-only' }).waitFor();
      await page.waitForLoadState('networkidle');
      const actions = await page.locator('button[data-action], button[data-bulk]').evaluateAll((els) => els.map((el) => [(el as any).disabled as boolean, el.getAttribute('title') ?? '']));
      if (path !== '/runs') expect(actions.length, path).toBeGreaterThan(0);
      for (const [disabled, title] of actions) {
        expect(disabled, path).toBe(true);
        expect(title, path).toMatch(/read-only/);
      }
      await page.close();
    }
    await anonymous.close();
  }, 120_000);
});
