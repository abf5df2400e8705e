import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys, freePort } from '@werkpilot/shared';
import { runWerkpilot } from '../../cli/test/cli-harness.js';
import { agentSource, findTool, isMissing, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

/**
 * The fleet controls across real processes: one scheduler and three workers (WORKER_CONCURRENCY
 * 10 each) on one Redis. The agents measure what the controls promise themselves, in Redis: a
 * counter of runs in progress per key with its high-water mark, and for rate-limited runs the time
 * their tokens were granted and the time they started, both on Redis's clock.
 */
const redis = useTestRedis();
const TOKEN = 'controls-token';

const promtool = findTool('promtool', { install: 'apt-get install prometheus', pathVariable: 'PROMTOOL' });
const CHROMIUM = findTool('chromium', { install: 'apt-get install -y chromium', pathVariable: 'CHROMIUM_PATH', aliases: ['chromium-browser'] });

const PROBE = `import { createLogger, createRedisConnection, type Redis } from '@werkpilot/shared';
let redis: Redis | undefined;
export function probe(): Redis {
  return (redis ??= createRedisConnection({ url: process.env.REDIS_URL!, role: 'probe', log: createLogger({ level: 'silent', name: 'probe' }) }));
}
const P = 'probe:' + process.env.WERKPILOT_PREFIX;
const ENTER = "local n = redis.call('INCR', KEYS[1]) if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end return n";
/** Runs \`work\` counted as one run in progress under \`key\`, keeping the most ever seen. */
export async function during(key: string, work: () => Promise<unknown>): Promise<void> {
  await probe().eval(ENTER, 2, P + ':active:' + key, P + ':max:' + key);
  try { await work(); } finally { await probe().decr(P + ':active:' + key); }
}
/** Records a run's grant (its token in the limiter's log) and its start, on Redis's clock. */
export async function recordStart(logKey: string, runId: string, attempt: number): Promise<void> {
  const granted = await probe().zscore(logKey, runId + ':' + (attempt - 1) + '#1');
  const [s, us] = await probe().time();
  await probe().rpush(P + ':starts', JSON.stringify({ granted: Number(granted), started: Number(s) * 1000 + Math.floor(Number(us) / 1000) }));
}
export async function note(list: string, value: unknown): Promise<void> {
  await probe().rpush(P + ':' + list, JSON.stringify(value));
}
`;

const agentsDir = writeAgentsDir({
  '_probe.ts': PROBE,
  'openai.ts': `import { defineLimiter } from '@werkpilot/shared';\nexport default defineLimiter({ name: 'openai', max: 5, perMs: 1000 });\n`,
  'tenant-sync.ts': `import { defineAgent } from '@werkpilot/shared';
import { during } from './_probe.js';
export default defineAgent<{ tenant: string }>({
  name: 'tenant-sync',
  concurrency: { limit: 2, key: (data) => data.tenant },
  overlap: 'queue',
  async run(ctx) {
    await during(ctx.data.tenant, () => new Promise((r) => setTimeout(r, 15 + Math.random() * 30)));
  },
});
`,
  'summarise.ts': `import { defineAgent, limiterKey, createKeys } from '@werkpilot/shared';
import { recordStart } from './_probe.js';
const log = limiterKey(createKeys(process.env.WERKPILOT_PREFIX!), 'openai');
export default defineAgent({
  name: 'summarise',
  overlap: 'allowAll',
  limiters: ['openai'],
  async run(ctx) { await recordStart(log, ctx.runId, ctx.attempt); },
});
`,
  'invoice.ts': `import { defineAgent } from '@werkpilot/shared';
import { note } from './_probe.js';
export default defineAgent({ name: 'invoice', async run(ctx) { await note('invoices', ctx.runId); } });
`,
  'pulse.ts': agentSource({ name: 'pulse', schedule: { cron: '* * * * * *' } }),
  'hourly.ts': `import { defineAgent } from '@werkpilot/shared';
import { note } from './_probe.js';
export default defineAgent({
  name: 'hourly',
  schedule: { cron: '0 * * * *', tz: 'UTC' },
  async run(ctx) { await note('hourly', ctx.scheduledAt?.toISOString() ?? null); },
});
`,
});

let prefix: string;
let url: string;
let apps: AppProcess[] = [];

const api = async (path: string, init: RequestInit = {}) => {
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
};
const probeKey = (suffix: string) => `probe:${prefix}:${suffix}`;
const list = async <T>(name: string): Promise<T[]> => (await redis.client().lrange(probeKey(name), 0, -1)).map((v) => JSON.parse(v) as T);

beforeAll(async () => {
  prefix = uniquePrefix();
  const port = await freePort();
  const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port), DASHBOARD_TOKEN: TOKEN, WORKER_CONCURRENCY: '10', LOG_LEVEL: 'warn' };
  apps = [startApp('scheduler', env), startApp('worker', env), startApp('worker', env), startApp('worker', env)];
  url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.ok, { timeoutMs: 40_000, what: 'the scheduler to be ready' });
  await waitFor(async () => ((await api('/api/metrics')).body?.system?.workers ?? []).length === 3, { timeoutMs: 40_000, what: 'three live workers' });
}, 90_000);

afterAll(async () => {
  for (const app of apps) app.kill('SIGTERM');
  await Promise.all(apps.map((a) => a.exited));
});

describe('fleet controls across a scheduler and three worker processes', () => {
  it('keeps every key at most at its limit while 200 runs of 5 keys run, and a shared limiter at its budget, every run completing', async () => {
    const tenants = ['t1', 't2', 't3', 't4', 't5'];
    const posts = Array.from({ length: 200 }, (_, n) => api('/api/agents/tenant-sync/run', { method: 'POST', body: JSON.stringify({ data: { tenant: tenants[n % 5] } }) }));
    const limited = Array.from({ length: 55 }, () => api('/api/agents/summarise/run', { method: 'POST' }));
    for (const res of await Promise.all([...posts, ...limited])) expect(res.status).toBe(202);

    const agent = await waitFor(
      async () => {
        const a = (await api('/api/agents/tenant-sync')).body;
        const s = (await api('/api/agents/summarise')).body;
        return a.runs === 200 && s.runs === 55 ? { a, s } : undefined;
      },
      { timeoutMs: 60_000, what: '200 tenant-sync and 55 summarise runs recorded' },
    );
    expect(agent.a).toMatchObject({ successes: 200, failures: 0, skipped: 0 });
    expect(agent.s).toMatchObject({ successes: 55, failures: 0, skipped: 0 });
    const client = redis.client();
    for (const tenant of tenants) expect(Number(await client.get(probeKey(`max:${tenant}`)))).toBe(2);

    // 55 runs at 5 per second: eleven windows, over 10 s; the grants exact, no run before its grant.
    const starts = await list<{ granted: number; started: number }>('starts');
    expect(starts).toHaveLength(55);
    const granted = starts.map((s) => s.granted).sort((a, b) => a - b);
    let most = 0;
    for (let i = 0, j = 0; j < granted.length; j++) {
      while (granted[j]! - granted[i]! >= 1000) i++;
      most = Math.max(most, j - i + 1);
    }
    expect(most).toBe(5);
    expect(granted.at(-1)! - granted[0]!).toBeGreaterThanOrEqual(10 * 1000);
    for (const s of starts) expect(s.started).toBeGreaterThanOrEqual(s.granted);
    expect(agent.s.controls).toMatchObject({ overlap: 'allowAll', concurrency: null, limiters: [{ name: 'openai', cost: 1, max: 5, perMs: 1000 }], waitingForTokens: 0 });
    expect(agent.s.controls.rateLimited).toBeGreaterThanOrEqual(45);
    expect(agent.a.controls).toEqual({ overlap: 'queue', concurrency: { limit: 2, keyed: true }, rateLimit: null, limiters: [], catchUp: null, running: 0, waiting: 0 });
  }, 120_000);

  it('answers 100 concurrent identical idempotent triggers with one run', async () => {
    const key = `order-${prefix}`;
    const answers = await Promise.all(
      Array.from({ length: 100 }, () => api('/api/agents/invoice/run', { method: 'POST', headers: { 'idempotency-key': key }, body: JSON.stringify({ data: { order: 42 } }) })),
    );
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([202]));
    const runIds = new Set(answers.map((a) => a.body.runId));
    expect(runIds.size).toBe(1);
    expect(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true')).toHaveLength(99);
    const [runId] = [...runIds];
    await waitFor(async () => (await list('invoices')).length === 1, { what: 'the one run to complete' });
    // The body field works too, and answers the same run; other data with the key is a conflict.
    expect((await api('/api/agents/invoice/run', { method: 'POST', body: JSON.stringify({ data: { order: 42 }, idempotencyKey: key }) })).body).toEqual({ runId, replayed: true });
    const conflict = await api('/api/agents/invoice/run', { method: 'POST', headers: { 'idempotency-key': key }, body: JSON.stringify({ data: { order: 43 } }) });
    expect(conflict.status).toBe(409);
    expect(conflict.body.error).toMatch(/^Idempotency-Key was already used for a different run of invoice/);
    expect((await api('/api/agents/invoice/run', { method: 'POST', headers: { 'idempotency-key': 'bad key with spaces' } })).status).toBe(400);
    await new Promise((r) => setTimeout(r, 300));
    expect(await list('invoices')).toEqual([runId]);
  }, 60_000);

  it('pauses and resumes a schedule: no tick while paused, manual runs still run', async () => {
    const runsOf = async () => (await api('/api/agents/pulse')).body.runs as number;
    await waitFor(async () => (await runsOf()) >= 2, { timeoutMs: 20_000, what: 'pulse to tick twice' });
    const paused = await api('/api/agents/pulse/schedule/pause', { method: 'POST' });
    expect(paused).toMatchObject({ status: 200, body: { agent: 'pulse', schedulePaused: true } });
    // A tick already queued when the pause answered may still finish; then nothing more.
    await new Promise((r) => setTimeout(r, 1200));
    const atPause = await runsOf();
    await new Promise((r) => setTimeout(r, 2500));
    const after = (await api('/api/agents/pulse')).body;
    expect(after.runs).toBe(atPause);
    expect(after.controls.schedulePaused).toBe(true);
    expect(after.skipped).toBe(0);
    const manual = await api('/api/agents/pulse/run', { method: 'POST' });
    expect(manual.status).toBe(202);
    await waitFor(async () => (await runsOf()) === atPause + 1, { what: 'the manual run of the paused agent' });
    expect((await api('/api/agents/invoice/schedule/pause', { method: 'POST' })).status).toBe(400);

    expect((await api('/api/agents/pulse/schedule/resume', { method: 'POST' })).body).toEqual({ agent: 'pulse', schedulePaused: false });
    await waitFor(async () => (await runsOf()) >= atPause + 3, { timeoutMs: 15_000, what: 'pulse to tick again after resume' });
    expect((await api('/api/agents/pulse')).body.controls.schedulePaused).toBe(false);
  }, 60_000);

  it('backfills 10 ticks in order, each run seeing its tick as ctx.scheduledAt', async () => {
    const from = '2025-03-01T00:00:00Z';
    const res = await api('/api/agents/hourly/backfill', { method: 'POST', body: JSON.stringify({ from, to: '2025-03-01T09:30:00Z' }) });
    expect(res.status).toBe(202);
    const ticks = Array.from({ length: 10 }, (_, h) => new Date(Date.parse(from) + h * 3_600_000).toISOString());
    expect(res.body.runs.map((r: { scheduledAt: string }) => r.scheduledAt)).toEqual(ticks);
    await waitFor(async () => (await list('hourly')).length === 10, { timeoutMs: 20_000, what: 'the ten backfilled runs' });
    expect(await list('hourly')).toEqual(ticks);
    expect((await api('/api/agents/hourly/backfill', { method: 'POST', body: JSON.stringify({ from: '2025-03-02T00:00:00Z', to: '2025-03-01T00:00:00Z' }) })).status).toBe(400);
    expect((await api('/api/agents/invoice/backfill', { method: 'POST', body: JSON.stringify({ from, to: from }) })).body.error).toBe('backfill: agent invoice has no schedule');
  }, 60_000);

  it('exports the controls to Prometheus', async () => {
    const res = await fetch(`${url}/metrics?format=prometheus`);
    const text = await res.text();
    expect(text).toContain('werkpilot_agent_concurrency_limit{agent="tenant-sync"} 2');
    expect(text).toContain('werkpilot_agent_slots_in_use{agent="tenant-sync"} 0');
    expect(text).toContain('werkpilot_agent_waiting_runs{agent="tenant-sync",waiting_for="slot"} 0');
    expect(text).toMatch(/werkpilot_agent_rate_limited_total\{agent="summarise"\} \d+/);
    expect(text).toContain('werkpilot_limiter_max_tokens{limiter="openai"} 5');
    expect(text).toMatch(/werkpilot_agent_schedule_paused\{agent="pulse"\} 0/);
  });

  it.skipIf(isMissing(promtool))('exports the controls clean under promtool', async () => {
    const text = await (await fetch(`${url}/metrics?format=prometheus`)).text();
    expect(text).toContain('werkpilot_limiter_max_tokens{limiter="openai"} 5');
    const check = spawnSync(promtool.path!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('shows and operates the controls from the CLI', async () => {
    const env = { WERKPILOT_URL: url, WERKPILOT_TOKEN: TOKEN };
    const table = await runWerkpilot(['agents'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/tenant-sync .*2\/key queue/);
    expect(table.stdout).toMatch(/summarise .*no limit allowAll · openai/);
    const detail = await runWerkpilot(['agents', 'tenant-sync'], env);
    expect(detail.stdout).toMatch(/Concurrency\s+2 at once per key, overlap queue/);
    expect(detail.stdout).toMatch(/Running\/waiting\s+0 running, 0 waiting for a slot, 0 for tokens/);

    expect(await runWerkpilot(['pause', 'pulse'], env)).toMatchObject({ code: 0, stdout: 'paused the schedule of pulse\n' });
    expect((await runWerkpilot(['agents'], env)).stdout).toMatch(/pulse .*\* \* \* \* \* \* \(PAUSED\)/);
    expect(await runWerkpilot(['resume', 'pulse'], env)).toMatchObject({ code: 0, stdout: 'resumed the schedule of pulse\n' });
    expect((await runWerkpilot(['pause', 'invoice'], env)).code).toBe(2);

    const backfilled = await runWerkpilot(['backfill', 'hourly', '--from', '2025-04-01T00:00:00Z', '--to', '2025-04-01T02:00:00Z'], env);
    expect(backfilled.code).toBe(0);
    expect(backfilled.stdout).toMatch(/^queued 3 runs of hourly \(backfill [0-9a-f-]+\), ticks 2025-04-01T00:00:00.000Z to 2025-04-01T02:00:00.000Z\n$/);
    const bad = await runWerkpilot(['backfill', 'hourly', '--from', 'yesterday', '--to', '2025-04-01T02:00:00Z'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/from: must be an ISO 8601 time/);

    const first = await runWerkpilot(['run', 'invoice', '--idempotency-key', `cli-${prefix}`, '--json'], env);
    const again = await runWerkpilot(['run', 'invoice', '--idempotency-key', `cli-${prefix}`], env);
    expect(again.stdout).toBe(`queued run ${JSON.parse(first.stdout).runId} of invoice\n(an earlier request with this idempotency key queued it; nothing new was queued)\n`);
  }, 30_000);

  it.skipIf(isMissing(CHROMIUM))(
    'shows the controls on the overview page and pauses a schedule from it (needs Chromium)',
    async () => {
      const browser = await chromium.launch({
        executablePath: CHROMIUM.path!,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      });
      try {
        const context = await browser.newContext({ httpCredentials: { username: 'operator', password: TOKEN } });
        const page = await context.newPage();
        await page.goto(`${url}/`);
        const cell = (agent: string) => page.locator(`#agents tr[data-agent="${agent}"] td.controls`);
        await cell('tenant-sync').waitFor({ timeout: 20_000 });
        await waitFor(async () => /2\/key · queue/.test(await cell('tenant-sync').innerText()), { what: 'the limit of tenant-sync on the page' });
        expect(await cell('tenant-sync').innerText()).toMatch(/0 running/);
        expect(await cell('summarise').innerText()).toMatch(/no limit · allowAll · openai 5\/1\.0 s/);
        await page.locator('#queues').getByText('openai').waitFor();
        await page.locator('button[data-action="pause"][data-agent="pulse"]').click();
        await waitFor(async () => (await api('/api/agents/pulse')).body.controls.schedulePaused === true, { what: 'the Pause button to pause pulse' });
        await page.locator('button[data-action="resume"][data-agent="pulse"]').waitFor({ timeout: 10_000 });
        expect(await cell('pulse').innerText()).toMatch(/schedule paused/);
        await page.locator('button[data-action="resume"][data-agent="pulse"]').click();
        await waitFor(async () => (await api('/api/agents/pulse')).body.controls.schedulePaused === false, { what: 'the Resume button to resume pulse' });
      } finally {
        await browser.close();
      }
    },
    60_000,
  );

  it('keeps its keys under the cluster hash tag', async () => {
    const keys = await redis.client().keys(`*${prefix}*`);
    const tag = createKeys(prefix).bullPrefix;
    expect(keys.filter((k) => !k.startsWith(tag) && !k.startsWith(`probe:${prefix}`))).toEqual([]);
  });
});
