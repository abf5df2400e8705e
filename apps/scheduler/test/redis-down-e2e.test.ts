import { afterAll, describe, expect, it } from 'vitest';
import { freePort, provisionRedis, redisAnswers } from '@werkpilot/shared';
import { agentSource, onSharedRedis, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

const redis = useTestRedis();
const agentsDir = writeAgentsDir({
  'crm-sync.ts': agentSource({ name: 'crm-sync', schedule: { cron: '*/2 * * * * *' } }, 'return { ok: true };'),
});

const toClose: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of toClose) await close();
});

/** One request's answer and how long it took. */
async function timed(url: string): Promise<{ status: number; body: unknown; ms: number }> {
  const startedAt = performance.now();
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body, ms: Math.round(performance.now() - startedAt) };
}

/** A scheduler and a worker, both with HTTP ports, on `redisUrl`; resolves once both listen. */
async function startPair(redisUrl: string) {
  const [port, workerPort] = [await freePort(), await freePort()];
  // METRICS_SNAPSHOT_MAX_AGE_MS=0: every read goes to Redis, as these checks need (with the default,
  // a read in the first 2 s of a freeze is answered from the metrics snapshot, without Redis).
  const env = { REDIS_URL: redisUrl, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, HEARTBEAT_INTERVAL_MS: '500', METRICS_SNAPSHOT_MAX_AGE_MS: '0' };
  const scheduler = startApp('scheduler', { ...env, PORT: String(port) });
  const worker = startApp('worker', { ...env, WORKER_HTTP_PORT: String(workerPort) });
  const url = `http://127.0.0.1:${port}`;
  const workerUrl = `http://127.0.0.1:${workerPort}`;
  await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok && (await fetch(`${workerUrl}/healthz`).catch(() => undefined))?.ok, {
    timeoutMs: 30_000,
    what: () => `both processes listening; scheduler:\n${scheduler.output().slice(-1000)}\nworker:\n${worker.output().slice(-1000)}`,
  });
  return { scheduler, worker, url, workerUrl };
}

/** What an operator sees with Redis away: every answer within 1 s, and 503 with the reason. */
async function expectVisiblyDown(url: string, workerUrl: string): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  const liveness = await timed(`${url}/healthz`);
  expect(liveness).toMatchObject({ status: 200, body: { status: 'ok' } });
  // A read first: with Redis frozen, nothing yet knows it, and the guard must find out.
  for (const path of ['/api/agents', '/api/metrics', '/metrics', '/api/dlq', '/api/events/recent']) {
    const read = await timed(`${url}${path}`);
    expect(read, path).toMatchObject({ status: 503, body: { error: 'redis unavailable' } });
    figures[path] = read.ms;
  }
  const readiness = await timed(`${url}/readyz`);
  expect(readiness).toMatchObject({ status: 503, body: { status: 'not ready', reason: expect.stringMatching(/^redis unavailable/) } });
  figures.readyz = readiness.ms;
  const workerLiveness = await timed(`${workerUrl}/healthz`);
  expect(workerLiveness.status).toBe(200);
  const workerReadiness = await timed(`${workerUrl}/readyz`);
  expect(workerReadiness).toMatchObject({ status: 503, body: { status: 'not ready', reason: expect.stringMatching(/^redis unavailable/) } });
  figures['worker /readyz'] = workerReadiness.ms;
  for (const [what, ms] of Object.entries(figures)) expect(ms, what).toBeLessThan(1000);
  return figures;
}

async function expectBack(pair: { url: string; workerUrl: string; scheduler: AppProcess; worker: AppProcess }): Promise<void> {
  await waitFor(async () => (await timed(`${pair.url}/readyz`)).status === 200, { timeoutMs: 20_000, what: 'the scheduler ready again' });
  await waitFor(async () => (await timed(`${pair.workerUrl}/readyz`)).status === 200, { timeoutMs: 20_000, what: 'the worker ready again' });
  expect((await timed(`${pair.url}/api/agents`)).status).toBe(200);
  for (const p of [pair.scheduler, pair.worker]) expect(p.proc.exitCode, p.output().slice(-1500)).toBe(null);
}

async function stopPair(pair: { scheduler: AppProcess; worker: AppProcess }): Promise<void> {
  for (const p of [pair.worker, pair.scheduler]) p.kill('SIGTERM');
  expect(await pair.worker.exited).toBe(0);
  expect(await pair.scheduler.exited).toBe(0);
}

describe('Redis down under running processes', () => {
  it.skipIf(onSharedRedis('stops its Redis'))(
    'stopped: /healthz answers 200, /readyz and every API read 503 with the reason within 1 s, and all recover when it is back',
    async () => {
      const pair = await startPair(redis.url);
      await expectBack(pair);
      const restarting = redis.restart({ downMs: 4000 });
      await waitFor(async () => !(await redisAnswers(redis.url, 200)), { what: 'redis stopped' });
      const figures = await expectVisiblyDown(pair.url, pair.workerUrl);
      // A burst of reads adds nothing to Redis's queue: each is refused at once.
      const burst = await Promise.all(Array.from({ length: 50 }, () => timed(`${pair.url}/api/metrics`)));
      expect(burst.every((r) => r.status === 503)).toBe(true);
      console.log(`[measure] redis stopped: answer times (ms) ${JSON.stringify(figures)}; 50 concurrent reads, slowest ${Math.max(...burst.map((r) => r.ms))} ms`);
      await restarting;
      await expectBack(pair);
      await stopPair(pair);
    },
    90_000,
  );

  it.skipIf(onSharedRedis('freezes its Redis'))(
    'frozen (SIGSTOP): the same answers within 1 s, though the connection stays open',
    async () => {
      const pair = await startPair(redis.url);
      await expectBack(pair);
      const thaw = redis.freeze();
      try {
        const figures = await expectVisiblyDown(pair.url, pair.workerUrl);
        console.log(`[measure] redis frozen: answer times (ms) ${JSON.stringify(figures)}`);
      } finally {
        thaw();
      }
      await expectBack(pair);
      await stopPair(pair);
    },
    90_000,
  );
});

describe('processes started before Redis', () => {
  it('bind their ports, report not ready with the reason, and connect, lead and run once Redis comes', async () => {
    const redisPort = await freePort();
    const url = `redis://127.0.0.1:${redisPort}`;
    const pair = await startPair(url);
    const figures = await expectVisiblyDown(pair.url, pair.workerUrl);
    console.log(`[measure] started without redis: answer times (ms) ${JSON.stringify(figures)}`);

    const late = await provisionRedis({ preferredPort: redisPort, allowDocker: false });
    toClose.push(() => late.stop());
    expect(late.url).toBe(url);
    const cameAt = Date.now();
    await expectBack(pair);
    await pair.worker.waitForLog(/worker online/);
    await waitFor(async () => ((await (await fetch(`${pair.url}/api/metrics`)).json()) as { system: { scheduler: { isLeader: boolean } } }).system.scheduler.isLeader, {
      timeoutMs: 20_000,
      what: 'the scheduler leading',
    });
    const ran = await waitFor(
      async () => {
        const body = (await (await fetch(`${pair.url}/api/agents/crm-sync`)).json()) as { successes?: number };
        return (body.successes ?? 0) > 0 ? body : undefined;
      },
      { timeoutMs: 20_000, what: 'a cron run after Redis came' },
    );
    expect(ran.successes).toBeGreaterThan(0);
    console.log(`[measure] started without redis: ready, leading and a cron run done ${Date.now() - cameAt} ms after Redis came`);
    await stopPair(pair);
  }, 90_000);
});
