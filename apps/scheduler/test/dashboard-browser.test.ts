import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { REPO_ROOT, findTool, isMissing, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, type AppProcess } from '@werkpilot/test-support';
import { freePort } from '@werkpilot/shared';

/**
 * The dashboard in a real browser: headless Debian Chromium (never a downloaded one) against a
 * real scheduler and worker running the demo agents, the flaky one failing every attempt so the
 * dead-letter queue fills. Screenshots go to test-results/ for a person to look at.
 */
const CHROMIUM = findTool('chromium', { install: 'apt-get install -y chromium', pathVariable: 'CHROMIUM_PATH', aliases: ['chromium-browser'] });
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const SCREENSHOTS = path.join(REPO_ROOT, 'test-results');
const DEMO_AGENTS = ['crm-sync', 'inbox-fetch', 'email-classifier', 'lead-scoring', 'campaign-planner', 'daily-report'];
const USER = 'operator';
const PASSWORD = 'browser-test-password';

const redis = useTestRedis();

let scheduler: AppProcess;
let worker: AppProcess;
let baseUrl: string;
let workerUrl: string;

beforeAll(async () => {
  const [port, workerPort] = await Promise.all([freePort(), freePort()]);
  const env = {
    REDIS_URL: redis.url,
    WERKPILOT_PREFIX: uniquePrefix(),
    DEMO_FAIL_RATE: '1',
    HEALTH_INTERVAL_MS: '1000',
    DASHBOARD_USER: USER,
    DASHBOARD_PASSWORD: PASSWORD,
  };
  worker = startApp('worker', { ...env, WORKER_HTTP_PORT: String(workerPort) });
  scheduler = startApp('scheduler', { ...env, PORT: String(port) });
  baseUrl = `http://127.0.0.1:${port}`;
  workerUrl = `http://127.0.0.1:${workerPort}`;
  await Promise.all([scheduler.waitForLog(/dashboard on/, 40_000), worker.waitForLog(/worker online/, 40_000)]);
}, 90_000);

afterAll(async () => {
  if (scheduler && worker) await stopApps([scheduler, worker]);
}, 60_000);

describe.skipIf(isMissing(CHROMIUM))('dashboard in headless Chromium', () => {
  let browser: Browser;

  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM.path!, args: CHROMIUM_ARGS });
    mkdirSync(SCREENSHOTS, { recursive: true });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
  }, 60_000);

  it('shows the demo agents updating live, retries a dead-lettered run, and opens Bull Board', async () => {
    const context = await browser.newContext({ viewport: { width: 1500, height: 1200 }, httpCredentials: { username: USER, password: PASSWORD } });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));

    await page.goto(`${baseUrl}/`);
    for (const agent of DEMO_AGENTS) await page.locator(`#agents tr[data-agent="${agent}"]`).waitFor({ timeout: 20_000 });
    await expect(page.locator('#mode').textContent()).resolves.toBe('operator');
    await page.locator('#dag .dag-node[data-node="daily-report"]').waitFor();

    // Live: the crm-sync runs counter grows and new events arrive over SSE without a reload.
    const runsOf = async (agent: string) => Number((await page.locator(`#agents tr[data-agent="${agent}"] td:nth-child(8)`).innerText()).split(' ')[0]);
    const before = await runsOf('crm-sync');
    await waitFor(async () => (await runsOf('crm-sync')) > before, { timeoutMs: 30_000, what: 'crm-sync runs to grow on the page' });
    await page.locator('#events li.new').first().waitFor({ timeout: 20_000 });
    await expect(page.locator('#events-source').textContent()).resolves.toMatch(/live/);

    // The flaky agent fails every attempt: its runs reach the DLQ, shown with their error.
    const row = page.locator('#dlq tr[data-run]').first();
    await row.waitFor({ timeout: 40_000 });
    await expect(row.innerText()).resolves.toMatch(/email-classifier/);
    const runId = await row.getAttribute('data-run');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-overview.png'), fullPage: true });

    const failedAt = (await (await context.request.get(`${baseUrl}/api/dlq/${encodeURIComponent(runId!)}`)).json()).failedAt as string;
    // New failures arrive on top every few seconds, so the button is found by its run id.
    const retried = page.waitForResponse((res) => res.url().endsWith(`/api/dlq/${encodeURIComponent(runId!)}/retry`));
    await page.locator(`#dlq tr[data-run="${runId}"] button[data-action="retry"]`).click();
    expect((await retried).status()).toBe(200);
    // The toast is written after the response arrives, so wait for it rather than read it once.
    await waitFor(async () => (await page.locator('#toast').textContent())?.includes(`run ${runId} retried`), { what: 'the retry toast' });
    // The run left the DLQ: it is queued or running again, or (the flaky agent fails every attempt) failed anew later.
    const run = await (await context.request.get(`${baseUrl}/api/runs/${encodeURIComponent(runId!)}`)).json();
    expect(run.id).toBe(runId);
    expect(run.state !== 'failed' || Date.parse(run.timings.finishedAt) > Date.parse(failedAt)).toBe(true);

    await page.goto(`${baseUrl}/queues`);
    await page.getByText('agents', { exact: true }).first().waitFor({ timeout: 20_000 });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-queues.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
    await context.close();
  }, 150_000);

  it('asks a browser without credentials to authenticate', async () => {
    const context = await browser.newContext();
    // Headless Chromium cannot answer the Basic prompt, so the page load fails on the challenge.
    await expect(context.newPage().then((page) => page.goto(`${baseUrl}/`))).rejects.toThrow(/ERR_INVALID_AUTH_CREDENTIALS/);
    const response = await context.request.get(`${baseUrl}/`);
    expect(response.status()).toBe(401);
    expect(response.headers()['www-authenticate']).toMatch(/^Basic/);
    await context.close();
  });
});

describe('the worker beside the dashboard (no browser needed)', () => {
  it("serves the worker's own /metrics and /healthz on WORKER_HTTP_PORT", async () => {
    const health = await fetch(`${workerUrl}/healthz`);
    expect(health.status).toBe(200);
    const { status, workerId } = (await health.json()) as { status: string; workerId: string };
    expect(status).toBe('ok');
    // Every series names its worker (Prometheus turns it into the instance label).
    const label = `worker="${workerId}"`;
    // crm-sync runs every 5 s: wait for this worker to have run one.
    const metrics = await waitFor(
      async () => {
        const text = await (await fetch(`${workerUrl}/metrics`)).text();
        return new RegExp(`^werkpilot_worker_runs_total\\{agent="crm-sync",outcome="success",${label}\\} [1-9]`, 'm').test(text) ? text : undefined;
      },
      { timeoutMs: 30_000, what: () => `a crm-sync success on the worker's /metrics; worker output:\n${worker.output().slice(-1500)}` },
    );
    expect(metrics).toMatch(new RegExp(`^werkpilot_worker_run_duration_seconds_bucket\\{le="\\+Inf",${label},agent="crm-sync"\\} [1-9]`, 'm'));
    expect(metrics).toContain('process_cpu_user_seconds_total');
  }, 60_000);
});
