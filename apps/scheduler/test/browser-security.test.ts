import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type BrowserContext, type Request, type Response } from 'playwright-core';
import { findTool, isMissing, startAppCluster, uniquePrefix, useTestRedis, waitFor, type AppCluster } from '@werkpilot/test-support';

/**
 * Port 3001 against a hostile site, in a real browser: headless Debian Chromium (never a downloaded
 * one) with a fresh profile, logged in to a real scheduler with Basic credentials, which the browser
 * then sends on its own with every request to the scheduler, whichever site made it. Bull Board
 * must still work under the Content Security Policy.
 */
const CHROMIUM = findTool('chromium', { install: 'apt-get install -y chromium', pathVariable: 'CHROMIUM_PATH', aliases: ['chromium-browser'] });
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const USER = 'operator';
const PASSWORD = 'browser-security-password';
const BASIC = { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` };

const redis = useTestRedis();

describe.skipIf(isMissing(CHROMIUM))('port 3001 and a hostile site, in headless Chromium', () => {
  let cluster: AppCluster;
  let context: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    cluster = await startAppCluster({
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: uniquePrefix(),
      DEMO_FAIL_RATE: '1',
      DASHBOARD_USER: USER,
      DASHBOARD_PASSWORD: PASSWORD,
    });
    profile = mkdtempSync(path.join(tmpdir(), 'werkpilot-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM.path!,
      args: CHROMIUM_ARGS,
      httpCredentials: { username: USER, password: PASSWORD },
    });
  }, 90_000);

  afterAll(async () => {
    await context?.close();
    await cluster?.stop();
    if (profile) rmSync(profile, { recursive: true, force: true });
  }, 60_000);

  /** Serves `html` from another origin: `localhost` is another site than `127.0.0.1`. */
  async function hostileSite(html: string, host: 'localhost' | '127.0.0.1'): Promise<{ url: string; close(): void }> {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { url: `http://${host}:${(server.address() as AddressInfo).port}/`, close: () => server.close() };
  }

  const agent = async (name: string) => (await (await fetch(`${cluster.url}/api/agents/${name}`, { headers: BASIC })).json()) as { enabled: boolean };

  it("refuses the form post another site sends with the operator's cached credentials, and nothing changes", async () => {
    const page = await context.newPage();
    // The operator has the dashboard open: the browser now holds the Basic credentials.
    await page.goto(`${cluster.url}/`);
    await page.locator('#agents tr[data-agent="crm-sync"]').waitFor({ timeout: 20_000 });
    // The attack of the issue: a text/plain form whose body looks like JSON, posted as the page loads.
    const html = `<!doctype html><form method="POST" action="${cluster.url}/api/agents/crm-sync/disable" enctype="text/plain">
<input name='{"data":"' value='"}'></form><script>document.forms[0].submit()</script>`;
    for (const host of ['localhost', '127.0.0.1'] as const) {
      const site = await hostileSite(html, host);
      try {
        const answered = page.waitForResponse((res) => res.url() === `${cluster.url}/api/agents/crm-sync/disable`);
        await page.goto(site.url);
        const res = await answered;
        // The browser did send the operator's credentials: only the origin check stands in the way.
        expect((await res.request().allHeaders()).authorization).toBe(BASIC.authorization);
        expect(res.status()).toBe(403);
        expect(((await res.json()) as { error: string }).error).toMatch(/^cross-site request refused/);
      } finally {
        site.close();
      }
    }
    expect((await agent('crm-sync')).enabled).toBe(true);
    await page.close();
  }, 60_000);

  it('refuses every operator action posted from another site by forms in frames or a no-cors fetch', async () => {
    const page = await context.newPage();
    await page.goto(`${cluster.url}/`);
    const actions = ['/api/agents/crm-sync/disable', '/api/agents/daily-report/run', '/api/agents/crm-sync/circuit/reset', '/api/dlq/retry', '/api/runs/1/cancel'];
    const forms = actions
      .map(
        (action, i) => `<iframe name="f${i}"></iframe>
<form target="f${i}" method="POST" action="${cluster.url}${action}" enctype="text/plain"><input name='{"data":"' value='"}'></form>`,
      )
      .join('\n');
    const html = `<!doctype html><html><body>${forms}
<iframe name="urlencoded"></iframe>
<form target="urlencoded" method="POST" action="${cluster.url}/api/agents/inbox-fetch/disable" enctype="application/x-www-form-urlencoded"><input name="x" value="1"></form>
<script>
  for (const form of document.forms) form.submit();
  fetch(${JSON.stringify(`${cluster.url}/api/agents/lead-scoring/disable`)}, { method: 'POST', mode: 'no-cors', credentials: 'include' });
</script></body></html>`;

    const formPosts = actions.length + 1;
    for (const host of ['localhost', '127.0.0.1'] as const) {
      const site = await hostileSite(html, host);
      const answers: Response[] = [];
      let isFetchDone = false;
      const onResponse = (res: Response) => {
        if (res.request().method() === 'POST' && res.url().startsWith(cluster.url)) answers.push(res);
      };
      // The no-cors fetch's answer is withheld from the page (Cross-Origin-Resource-Policy): it fails.
      const onFailed = (req: Request) => {
        if (req.url().endsWith('/lead-scoring/disable')) isFetchDone = true;
      };
      context.on('response', onResponse);
      context.on('requestfailed', onFailed);
      try {
        await page.goto(site.url);
        await waitFor(() => answers.length === formPosts && isFetchDone, {
          what: () => `the ${formPosts} form posts and the fetch from ${host} to be answered; got ${answers.map((a) => a.url()).join(', ')}`,
        });
      } finally {
        context.off('response', onResponse);
        context.off('requestfailed', onFailed);
        site.close();
      }
      // 403 is the origin check's answer (missing credentials would be 401); the frames may not
      // show the body, since the answer also refuses to be framed.
      for (const res of answers) expect(res.status(), res.url()).toBe(403);
    }
    for (const name of ['crm-sync', 'inbox-fetch', 'lead-scoring']) expect((await agent(name)).enabled, name).toBe(true);
    await page.close();
  }, 60_000);

  it('cannot be framed by another site', async () => {
    const page = await context.newPage();
    const site = await hostileSite(`<!doctype html><iframe id="victim" src="${cluster.url}/" width="800" height="600"></iframe>`, 'localhost');
    try {
      const refused = page.waitForEvent('console', (message) => /frame-ancestors/.test(message.text()));
      await page.goto(site.url);
      await refused;
      const frame = page.frames().find((f) => f !== page.mainFrame());
      // The dashboard never rendered inside it: no agents table in the frame.
      expect(
        await frame
          ?.locator('#agents')
          .count()
          .catch(() => 0),
      ).toBe(0);
    } finally {
      site.close();
      await page.close();
    }
  });

  it('keeps Bull Board working under the Content Security Policy, its bodyless actions included', async () => {
    const page = await context.newPage();
    const pageErrors: string[] = [];
    const violations: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (message) => {
      if (/Content Security Policy/.test(message.text())) violations.push(message.text());
    });
    await waitFor(async () => ((await (await fetch(`${cluster.url}/api/dlq`, { headers: BASIC })).json()) as { total: number }).total > 0, {
      timeoutMs: 40_000,
      what: 'a dead-lettered run',
    });
    await page.goto(`${cluster.url}/queues/queue/agents?status=failed`);
    await page.locator('button', { hasText: 'Retry all' }).waitFor({ timeout: 20_000 });
    await page.locator('button', { hasText: 'Retry all' }).click();
    const retried = page.waitForResponse((res) => res.url().endsWith('/queues/api/queues/agents/retry/failed') && res.request().method() === 'PUT');
    await page.locator('button', { hasText: /^Confirm$/ }).click();
    expect((await retried).status()).toBe(200);

    await page.goto(`${cluster.url}/queues/queue/system`);
    await page.getByText('system', { exact: true }).first().waitFor({ timeout: 20_000 });
    expect(pageErrors).toEqual([]);
    // Only Bull Board's Google Fonts stylesheet is refused: the policy allows no third party.
    expect(violations.filter((v) => !v.includes('https://fonts.googleapis.com/'))).toEqual([]);
    await page.close();
  }, 90_000);
});
