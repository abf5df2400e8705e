import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventBus, createKeys, createLogger } from '@werkpilot/shared';
import { openEventStream, openStalledEventStream, startAppCluster, uniquePrefix, useTestRedis, waitFor, type AppCluster, type StalledEventStream } from '@werkpilot/test-support';

/**
 * Port 3001 of a real scheduler process (with a worker running the demo agents) under what an
 * attacker on the network would send: every route with malformed, oversized, unicode and
 * pathological input. Whatever comes in, no answer is a 5xx or takes longer than a second, errors
 * are one `{ "error" }`, and `/healthz` keeps answering throughout.
 */
const redis = useTestRedis();
const TOKEN = 'hostile-input-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const SLOWEST_MS = 1000;

/** Polls /healthz every 10 ms until stopped; every answer must be a quick 200. */
function watchHealthz(url: string): { stop(): Promise<{ samples: number[]; failures: string[] }> } {
  const samples: number[] = [];
  const failures: string[] = [];
  let isRunning = true;
  const loop = (async () => {
    while (isRunning) {
      const started = performance.now();
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
        await res.text();
        if (res.status !== 200) failures.push(`/healthz answered ${res.status}`);
      } catch (err) {
        failures.push(`/healthz failed: ${(err as Error).message}`);
      }
      samples.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    stop: async () => {
      isRunning = false;
      await loop;
      return { samples, failures };
    },
  };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
};

describe('port 3001 under hostile input', () => {
  let cluster: AppCluster;
  beforeAll(async () => {
    cluster = await startAppCluster({ REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), DASHBOARD_TOKEN: TOKEN, DEMO_FAIL_RATE: '1' });
    // A dead-lettered run and a completed one, so the routes have real runs to look at too.
    await waitFor(async () => ((await (await fetch(`${cluster.url}/api/dlq`, { headers: AUTH })).json()) as { total: number }).total > 0, {
      timeoutMs: 40_000,
      what: 'a dead-lettered run',
    });
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('answers every route quickly, without a 5xx, whatever it is sent, while /healthz keeps answering', async () => {
    const { entries } = (await (await fetch(`${cluster.url}/api/dlq`, { headers: AUTH })).json()) as { entries: { id: string }[] };
    const realRun = entries[0]!.id;

    const odd = [
      'stalled-check',
      'events',
      'id',
      'meta',
      'repeat',
      'repeat:crm-sync',
      'wait',
      'completed',
      'marker',
      '1:logs',
      realRun,
      `${realRun}:lock`,
      '__proto__',
      'constructor',
      '..',
      '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      '%00',
      '%E0%A4%A',
      '%',
      '%F0%9F%92%A5',
      encodeURIComponent('ä·💥·\u202e·\u0000'),
      'x'.repeat(10_000),
      encodeURIComponent(`${'*'.repeat(40)}X`),
      '-1',
      '0',
      '99999999999999999999999',
    ];
    const globBombs = [`${'*'.repeat(40)}X`, `${'*'.repeat(99)}X`, `${'*'.repeat(9_999)}X`, `${'*a'.repeat(50)}`, Array.from({ length: 5000 }, () => 'agent:*').join(',')];
    const nested = (depth: number) => `{"data":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const twoMegabytes = JSON.stringify({ data: 'x'.repeat(2 * 1024 * 1024 - 20) });
    const bodies: { type?: string; body: string }[] = [
      { type: 'application/json', body: nested(500_000) },
      { type: 'application/json', body: `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}` },
      { type: 'application/json', body: twoMegabytes },
      { type: 'application/json', body: `{"data":"${'y'.repeat(3 * 1024 * 1024)}"}` },
      { type: 'application/json', body: JSON.stringify(Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i]))) },
      { type: 'application/json', body: '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}' },
      { type: 'application/json', body: '{"data":"\\ud800 lone surrogate ä 💥 \u202e","reason":"\\u0000"}' },
      { type: 'application/json', body: '\ufeff{"data":1}' },
      { type: 'application/json', body: '{"data":' },
      { type: 'application/json; charset=utf-16', body: '{}' },
      { type: 'text/plain', body: '{"data":1}' },
      { type: 'application/x-www-form-urlencoded', body: 'data=1&withDependents=true' },
      { body: '{}' },
      { type: 'application/json', body: '' },
    ];

    const reads = [
      '/',
      '/index.html',
      '/app.js',
      '/style.css',
      '/api/session',
      '/api/agents',
      '/api/metrics',
      '/metrics',
      '/metrics?format=prometheus',
      '/api/reports',
      '/api/reports/latest',
      '/queues',
      '/queues/api/queues',
      '/queues/api/redis/stats',
      ...odd.flatMap((id) => [
        `/api/agents/${id}`,
        `/api/runs/${id}`,
        `/api/dlq/${id}`,
        `/queues/api/queues/agents/${id}`,
        `/queues/api/queues/agents/${id}/logs`,
        `/queues/api/queues/${id}`,
      ]),
      ...globBombs.flatMap((type) => [`/api/events/recent?limit=1000&type=${encodeURIComponent(type)}`, `/api/events?type=${encodeURIComponent(type)}`]),
      `/api/events/recent?agent=${Array.from({ length: 10_000 }, () => 'crm-sync').join(',')}`,
      `/api/events/recent?${Array.from({ length: 1000 }, () => 'type=a').join('&')}`,
      '/api/events/recent?limit=1e309',
      '/api/events/recent?limit=-0',
      '/api/events/recent?limit=1&limit=2',
      '/api/events/recent?type[a]=b',
      '/api/dlq?limit=99999999999999999999&offset=-1',
      '/api/dlq?offset=100000&limit=100',
      `/api/dlq?limit=${'9'.repeat(5000)}`,
      `/api/runs?q=${'x'.repeat(5000)}`,
      `/api/runs?state=${'completed,'.repeat(1000)}`,
      '/api/runs?q=%25%5B(.*%00%ff',
      '/api/runs?limit=1e309',
      '/api/runs?agent[a]=b',
      '/api/runs?since=99999-01-01',
      '/api/runs?until=0s&since=999999d',
      `/api/runs?cursor=${'A'.repeat(499)}`,
      `/api/runs?cursor=${Buffer.from(JSON.stringify({ p: 4, o: 9e15, oc: 9e15, of: 9e15, u: 9e15 })).toString('base64url')}`,
      `/api/runs?cursor=${Buffer.from(JSON.stringify({ p: 0, o: 2 ** 53, oc: -1, of: 0, u: 0 })).toString('base64url')}`,
      '/api/dlq/groups',
      `/api/dlq/groups?match=${'%25'.repeat(300)}`,
      '/api/dlq/groups?since=1e309',
      '/api/dlq/selection?group=%00',
      `/api/dlq/selection?agent=${'a'.repeat(5000)}`,
      '/api/agents/crm-sync/rollups',
      ...odd.flatMap((id) => [`/api/agents/${id}/rollups`, `/api/runs/${id}/logs`, `/api/pipelines/${id}`]),
      '/agents/crm-sync',
      '/runs',
      '/dlq',
      ...odd.flatMap((id) => [`/agents/${id}`, `/runs/${id}`]),
      '/queues/api/queues?activeQueue=agents&status=failed&page=-1',
      `/queues/api/queues?activeQueue=agents&status=latest&page=${'9'.repeat(400)}`,
      '/queues/api/queues?activeQueue=nope&status=%00',
      '/queues/api/queues?activeQueue=agents&status=failed&jobsPerPage=1000000',
    ];
    const writes: [string, string][] = [
      ...odd.flatMap((id): [string, string][] => [
        ['POST', `/api/agents/${id}/run`],
        ['POST', `/api/agents/${id}/disable`],
        ['POST', `/api/agents/${id}/circuit/reset`],
        ['POST', `/api/dlq/${id}/retry`],
        ['DELETE', `/api/dlq/${id}`],
        ['POST', `/api/runs/${id}/cancel`],
        ['POST', '/api/dlq/replay'],
        ['POST', '/api/dlq/delete'],
        ['PUT', `/queues/api/queues/agents/${id}/clean`],
        ['PATCH', `/queues/api/queues/agents/${id}/priority`],
      ]),
      ...bodies.map((): [string, string] => ['POST', '/api/agents/crm-sync/run']),
    ];
    const headerVariants: Record<string, string>[] = [
      { accept: `text/plain;q=0.${'9'.repeat(4000)}` },
      { accept: Array.from({ length: 500 }, (_, i) => `type/sub${i};q=0.${i % 10}`).join(', ') },
      { authorization: `Basic ${'!'.repeat(4000)}` },
      // fetch sends only Latin-1 header values: these are the raw UTF-8 bytes of the emoji.
      { authorization: `Bearer ${Buffer.from('💥'.repeat(1000)).toString('latin1')}` },
      { origin: 'null' },
      { 'x-forwarded-host': 'a'.repeat(4000) },
    ];

    type Case = { method: string; path: string; headers: Record<string, string>; body?: string };
    const cases: Case[] = [];
    for (const path of reads) cases.push({ method: 'GET', path, headers: AUTH });
    for (const path of reads.slice(0, 14)) for (const headers of headerVariants) cases.push({ method: 'GET', path, headers: { ...AUTH, ...headers } });
    for (const path of ['/metrics', '/api/agents']) cases.push({ method: 'GET', path, headers: {} });
    for (const [i, [method, path]] of writes.entries()) {
      const variant = bodies[i % bodies.length]!;
      cases.push({ method, path, headers: { ...AUTH, ...(variant.type ? { 'content-type': variant.type } : {}) }, body: variant.body });
    }
    for (const variant of bodies) {
      for (const path of ['/api/agents/crm-sync/disable', '/api/runs/1/cancel', '/api/dlq/retry', '/api/dlq/replay', '/api/dlq/delete', '/queues/api/queues/agents/retry/failed']) {
        cases.push({ method: path.startsWith('/queues') ? 'PUT' : 'POST', path, headers: { ...AUTH, ...(variant.type ? { 'content-type': variant.type } : {}) }, body: variant.body });
      }
    }

    const healthz = watchHealthz(cluster.url);
    const failures: string[] = [];
    const statuses = new Map<number, number>();
    let slowest = { ms: 0, what: '' };
    for (const c of cases) {
      const what = `${c.method} ${c.path.slice(0, 120)}${c.body ? ` [${c.body.length} bytes ${c.headers['content-type'] ?? 'no type'}]` : ''}`;
      const controller = new AbortController();
      const started = performance.now();
      let status: number;
      let text = '';
      try {
        const res = await fetch(`${cluster.url}${c.path}`, { method: c.method, headers: c.headers, signal: controller.signal, ...(c.body !== undefined ? { body: c.body } : {}) });
        status = res.status;
        // A live event stream never ends: its headers are the answer.
        if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) controller.abort();
        else text = await res.text();
      } catch (err) {
        failures.push(`${what}: ${(err as Error).message}`);
        continue;
      }
      const ms = performance.now() - started;
      if (ms > slowest.ms) slowest = { ms, what };
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500) failures.push(`${what} → ${status} ${text.slice(0, 200)}`);
      if (ms > SLOWEST_MS) failures.push(`${what} took ${Math.round(ms)} ms`);
      // 431 (headers over 16 KiB) is Node's HTTP parser refusing before the app sees the request.
      const isAppAnswer = status !== 431;
      if (status >= 400 && isAppAnswer && c.path.startsWith('/api/') && !/^\{"error":"[\s\S]*"\}$/.test(text))
        failures.push(`${what} → ${status} without one { error }: ${text.slice(0, 200)}`);
      // A failed run's own stack trace is data; an error answer carries none.
      if (status >= 400 && /\n\s+at |node_modules|\.ts:\d+/.test(text)) failures.push(`${what} → leaked a stack: ${text.slice(0, 200)}`);
    }
    const health = await healthz.stop();

    expect(failures, failures.slice(0, 10).join('\n')).toEqual([]);
    expect(health.failures).toEqual([]);
    expect(health.samples.length).toBeGreaterThan(10);
    expect(Math.max(...health.samples), `slowest /healthz; slowest request: ${slowest.what} in ${Math.round(slowest.ms)} ms`).toBeLessThan(SLOWEST_MS);
    // Most of it was refused, as it should be, and the scheduler serves on.
    expect((statuses.get(400) ?? 0) + (statuses.get(404) ?? 0) + (statuses.get(413) ?? 0) + (statuses.get(415) ?? 0)).toBeGreaterThan(cases.length / 2);
    expect(cluster.scheduler.proc.exitCode).toBeNull();
    expect((await fetch(`${cluster.url}/api/agents`, { headers: AUTH })).status).toBe(200);
    console.log(
      `hostile input: ${cases.length} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, slowest ${Math.round(slowest.ms)} ms (${slowest.what}); ` +
        `/healthz p50 ${percentile(health.samples, 50).toFixed(1)} ms, p99 ${percentile(health.samples, 99).toFixed(1)} ms, max ${Math.max(...health.samples).toFixed(1)} ms over ${health.samples.length} probes`,
    );
  }, 180_000);

  it('refuses a 10 000-character event filter at once, on the history and the live stream, while /healthz keeps answering', async () => {
    const pattern = `${'*'.repeat(9_999)}X`;
    const healthz = watchHealthz(cluster.url);
    const timings: number[] = [];
    for (let i = 0; i < 20; i++) {
      for (const path of ['/api/events/recent?limit=1000&type=', '/api/events?type=']) {
        const started = performance.now();
        const res = await fetch(`${cluster.url}${path}${pattern}`, { headers: AUTH });
        expect(res.status).toBe(400);
        expect(await res.json()).toEqual({ error: 'type: at most 20 values of at most 100 characters each' });
        timings.push(performance.now() - started);
      }
    }
    const health = await healthz.stop();
    expect(health.failures).toEqual([]);
    expect(Math.max(...timings)).toBeLessThan(SLOWEST_MS);
    console.log(
      `10 000-character filter: answered in p50 ${percentile(timings, 50).toFixed(1)} ms, max ${Math.max(...timings).toFixed(1)} ms; /healthz max ${Math.max(...health.samples).toFixed(1)} ms`,
    );
  });
});

describe('the live event stream flooded', () => {
  let cluster: AppCluster;
  const prefix = uniquePrefix();
  beforeAll(async () => {
    cluster = await startAppCluster({ REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, DASHBOARD_TOKEN: TOKEN });
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  const rssMB = () => Number(/VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${cluster.scheduler.proc.pid}/status`, 'utf8'))?.[1]) / 1024;

  it('keeps the scheduler small and /healthz answering with 100 clients that never read while 5000 events of 1 KiB flow', async () => {
    const publisher = new EventBus({ redis: redis.client(), keys: createKeys(prefix), log: createLogger({ level: 'silent', name: 'flood' }) });
    const baselineMB = rssMB();
    const stalled: StalledEventStream[] = [];
    for (let i = 0; i < 100; i++) stalled.push(await openStalledEventStream(cluster.url, '/api/events', AUTH));
    const refused = await fetch(`${cluster.url}/api/events`, { headers: AUTH });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('10');
    await refused.text();

    let peakMB = rssMB();
    const sampler = setInterval(() => (peakMB = Math.max(peakMB, rssMB())), 50);
    const healthz = watchHealthz(cluster.url);
    const payload = 'x'.repeat(1024);
    const started = performance.now();
    try {
      for (let i = 0; i < 5000; i += 100) {
        const pipeline = redis.client().pipeline();
        for (let j = i; j < i + 100; j++) publisher.addTo(pipeline, publisher.event('flood:event', { n: j, payload }));
        await pipeline.exec();
      }
      // Every client fell 5 MB behind: the scheduler drops each of them instead of holding it.
      await waitFor(() => (cluster.scheduler.output().match(/dropped a live event stream/g) ?? []).length === 100, {
        timeoutMs: 30_000,
        what: () => `100 dropped streams; dropped ${(cluster.scheduler.output().match(/dropped a live event stream/g) ?? []).length}; rss ${rssMB()}`,
      });
    } finally {
      clearInterval(sampler);
    }
    const floodMs = performance.now() - started;
    const health = await healthz.stop();
    peakMB = Math.max(peakMB, rssMB());

    // The streams that kept up still get every event.
    const reader = await openEventStream(`${cluster.url}/api/events`, AUTH);
    await publisher.publish('flood:after', {});
    await waitFor(() => reader.events.some((e) => e.type === 'flood:after'), { what: 'an event after the flood' });
    reader.close();
    for (const s of stalled) s.close();

    expect(health.failures).toEqual([]);
    expect(health.samples.length).toBeGreaterThan(0);
    const p99 = percentile(health.samples, 99);
    console.log(
      `SSE flood: 100 stalled clients, 5000 events of 1 KiB in ${Math.round(floodMs)} ms: scheduler RSS ${baselineMB.toFixed(1)} → peak ${peakMB.toFixed(1)} MB ` +
        `(+${(peakMB - baselineMB).toFixed(1)} MB); /healthz p50 ${percentile(health.samples, 50).toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...health.samples).toFixed(1)} ms over ${health.samples.length} probes`,
    );
    // Without the bounds the scheduler held up to 100 × 5 MB of unsent events; this bound is generous
    // for a shared machine. /healthz answered every probe (above); its latency is measured by
    // `pnpm bench --only sse-flood` from a process of its own (targets: +50 MB, p99 50 ms), since
    // probes from this process, which publishes the flood, time this process as much as the scheduler.
    expect(peakMB - baselineMB).toBeLessThan(100);
    await publisher.close();
  }, 120_000);
});
