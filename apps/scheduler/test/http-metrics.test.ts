import { spawnSync } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { RUN_DURATION_BUCKETS_SECONDS, wantsPrometheusFormat } from '@werkpilot/shared';
import { findTool, isMissing, useTestRedis, waitFor } from '@werkpilot/test-support';
import { basic, call, startHttpHarness, type Harness, type HarnessOptions } from './_http-harness.js';

const redis = useTestRedis();
const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

const CREDENTIALS = { user: 'ops', password: 'pw' };
const AUTH = basic(CREDENTIALS.user, CREDENTIALS.password);
const PROMETHEUS_ACCEPT = 'application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1';
const promtool = findTool('promtool', { install: 'apt-get install prometheus', pathVariable: 'PROMTOOL' });

async function start(options: Omit<HarnessOptions, 'credentials'> = {}): Promise<Harness> {
  const h = await startHttpHarness(redis, { credentials: CREDENTIALS, ...options });
  harnesses.push(h);
  return h;
}

async function runAndWait(h: Harness, agent: string, state: 'completed' | 'failed'): Promise<string> {
  const queued = await call(h.url, `/api/agents/${agent}/run`, { method: 'POST', body: {}, headers: AUTH });
  expect(queued.status).toBe(202);
  await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === state, { timeoutMs: 15_000, what: `${agent} ${state}` });
  return queued.body.runId;
}

/** `name{labels} value` lines of an exposition, as a map from the series to its value. */
function series(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    map.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return map;
}

async function prometheusText(url: string): Promise<string> {
  const res = await call(url, '/metrics', { headers: { accept: 'text/plain' } });
  expect(res.status).toBe(200);
  return res.text;
}

describe('/metrics content negotiation', () => {
  it('serves the JSON snapshot to plain curl, */* and application/json', async () => {
    const h = await start();
    for (const accept of [undefined, '*/*', 'application/json', 'text/html,application/xhtml+xml,*/*;q=0.8']) {
      const res = await call(h.url, '/metrics', { headers: accept ? { accept } : {} });
      expect(res.headers.get('content-type'), String(accept)).toMatch(/^application\/json/);
      expect(res.body.deadLetterQueue).toEqual([]);
      expect(res.body).toMatchObject({ executionQueueSize: 0, deadLetterQueueSize: 0 });
      expect(typeof res.body.system.memory.heapPercent).toBe('number');
      expect(typeof res.body.system.memory.rssMB).toBe('number');
      expect(res.body.agents.alpha).toMatchObject({ priority: 1, dependencyDepth: 0, p50: null });
    }
  });

  it('serves the Prometheus text format to text/plain, OpenMetrics and Prometheus Accept headers, and ?format=prometheus', async () => {
    const h = await start();
    const requests: [string, Record<string, string>][] = [
      ['/metrics', { accept: 'text/plain' }],
      ['/metrics', { accept: 'text/plain;version=0.0.4' }],
      ['/metrics', { accept: 'application/openmetrics-text; version=1.0.0' }],
      ['/metrics', { accept: PROMETHEUS_ACCEPT }],
      ['/metrics?format=prometheus', {}],
      ['/metrics?format=prometheus', { accept: 'application/json' }],
    ];
    for (const [path, headers] of requests) {
      const res = await call(h.url, path, { headers });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type'), JSON.stringify(headers)).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(res.headers.get('vary')).toMatch(/Accept/);
      expect(res.text).toMatch(/^# HELP /m);
      expect(res.text).toContain('werkpilot_agent_runs_total{agent="alpha",outcome="success"} 0');
    }
  });

  it('keeps /api/metrics JSON whatever Accept says', async () => {
    const h = await start();
    const res = await call(h.url, '/api/metrics', { headers: { ...AUTH, accept: 'text/plain' } });
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.body.deadLetterQueueSize).toBe(0);
  });

  it('decides by media type and q-value', () => {
    expect(wantsPrometheusFormat('text/plain;q=0', undefined)).toBe(false);
    expect(wantsPrometheusFormat('TEXT/PLAIN', undefined)).toBe(true);
    expect(wantsPrometheusFormat('text/html', undefined)).toBe(false);
    expect(wantsPrometheusFormat('text/plain', 'json')).toBe(false);
  });
});

describe('Prometheus exporter', () => {
  it('exports cluster-wide run counters, retries, timeouts and a duration histogram that agree with the agent state', async () => {
    const h = await start();
    await h.startWorker();
    await runAndWait(h, 'alpha', 'completed');
    await runAndWait(h, 'alpha', 'completed');
    await runAndWait(h, 'flaky', 'completed');
    await runAndWait(h, 'sleepy', 'failed');
    await runAndWait(h, 'doomed', 'failed');

    const m = series(await prometheusText(h.url));
    const runs = (agent: string, outcome: string) => m.get(`werkpilot_agent_runs_total{agent="${agent}",outcome="${outcome}"}`);
    expect(runs('alpha', 'success')).toBe(2);
    expect(runs('flaky', 'failure')).toBe(1);
    expect(runs('flaky', 'success')).toBe(1);
    expect(m.get('werkpilot_agent_retries_total{agent="flaky"}')).toBe(1);
    expect(runs('sleepy', 'timeout')).toBe(1);
    expect(runs('sleepy', 'failure')).toBe(0);
    expect(runs('doomed', 'failure')).toBe(1);
    expect(m.get('werkpilot_dead_letter_queue_size')).toBe(2);
    expect(m.get('werkpilot_queue_jobs{queue="agents",state="failed"}')).toBe(2);
    expect(m.get('werkpilot_agent_priority{agent="alpha"}')).toBe(1);
    expect(m.get('werkpilot_agent_dependency_depth{agent="gamma"}')).toBe(2);
    expect(m.get('werkpilot_agent_circuit_state{agent="alpha",state="closed"}')).toBe(1);
    expect(m.get('werkpilot_agent_circuit_state{agent="alpha",state="open"}')).toBe(0);
    expect(m.get('werkpilot_agent_enabled{agent="alpha"}')).toBe(1);
    expect(m.get('werkpilot_agent_score{agent="alpha"}')).toBeGreaterThan(90);
    expect(m.has('werkpilot_agent_score{agent="gamma"}')).toBe(false);
    expect(m.get('werkpilot_agent_health_state{agent="alpha",state="unknown"}')).toBe(1);
    expect(m.has('process_resident_memory_bytes')).toBe(true);

    // Every executed attempt lands in the histogram: +Inf bucket = _count = the state's runs.
    const states = await h.state.getMany(['alpha', 'flaky', 'sleepy']);
    for (const [agent, state] of states) {
      expect(m.get(`werkpilot_agent_run_duration_seconds_count{agent="${agent}"}`), agent).toBe(state.runs);
      expect(m.get(`werkpilot_agent_run_duration_seconds_bucket{agent="${agent}",le="+Inf"}`)).toBe(state.runs);
    }
    // The timed-out attempt took at least its 50 ms timeout.
    expect(m.get('werkpilot_agent_run_duration_seconds_sum{agent="sleepy"}')).toBeGreaterThanOrEqual(0.05);
    expect(m.get('werkpilot_agent_run_duration_seconds_bucket{agent="sleepy",le="0.025"}')).toBe(0);
  });

  it('counts a cancelled run as cancelled, not as a failure', async () => {
    const h = await start();
    await h.startWorker();
    const queued = await call(h.url, '/api/agents/waiter/run', { method: 'POST', body: {}, headers: AUTH });
    await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === 'active', { what: 'waiter active' });
    const cancelled = await call(h.url, `/api/runs/${queued.body.runId}/cancel`, { method: 'POST', headers: AUTH });
    expect(cancelled.body).toMatchObject({ outcome: 'aborting', state: 'running' });
    await waitFor(async () => (await h.queues.agents.getJobState(queued.body.runId)) === 'completed', { what: 'waiter cancelled' });
    await waitFor(async () => series(await prometheusText(h.url)).get('werkpilot_agent_runs_total{agent="waiter",outcome="cancelled"}') === 1);
    const m = series(await prometheusText(h.url));
    expect(m.get('werkpilot_agent_runs_total{agent="waiter",outcome="failure"}')).toBe(0);
    expect(m.get('werkpilot_agent_retries_total{agent="waiter"}')).toBe(0);
  });

  it('has sane histogram buckets: 10 ms to 10 min, ascending, cumulative', async () => {
    expect(RUN_DURATION_BUCKETS_SECONDS[0]).toBe(0.01);
    expect(RUN_DURATION_BUCKETS_SECONDS.at(-1)).toBe(600);
    for (let i = 1; i < RUN_DURATION_BUCKETS_SECONDS.length; i++) {
      expect(RUN_DURATION_BUCKETS_SECONDS[i]!).toBeGreaterThan(RUN_DURATION_BUCKETS_SECONDS[i - 1]!);
      expect(RUN_DURATION_BUCKETS_SECONDS[i]! / RUN_DURATION_BUCKETS_SECONDS[i - 1]!).toBeLessThanOrEqual(3);
    }
    const h = await start();
    await h.startWorker();
    await runAndWait(h, 'alpha', 'completed');
    const text = await prometheusText(h.url);
    const buckets = [...text.matchAll(/^werkpilot_agent_run_duration_seconds_bucket\{agent="alpha",le="([^"]+)"\} (\d+)$/gm)];
    expect(buckets.map((b) => b[1])).toEqual([...RUN_DURATION_BUCKETS_SECONDS.map(String), '+Inf']);
    const counts = buckets.map((b) => Number(b[2]));
    for (let i = 1; i < counts.length; i++) expect(counts[i]!).toBeGreaterThanOrEqual(counts[i - 1]!);
    expect(counts.at(-1)).toBe(1);
  });

  it('reports the same totals from every scheduler replica (figures come from Redis)', async () => {
    const h = await start();
    await h.startWorker();
    await runAndWait(h, 'alpha', 'completed');
    await runAndWait(h, 'doomed', 'failed');
    const other = await h.replica();
    const pick = (text: string) =>
      text
        .split('\n')
        .filter((l) => /^werkpilot_(agent_runs_total|agent_retries_total|agent_run_duration_seconds|dead_letter_queue_size|queue_jobs)/.test(l))
        .join('\n');
    const fromFirst = pick(await prometheusText(h.url));
    // Not two empty strings: the figures are there, with the values the two runs left.
    expect(fromFirst).toContain('werkpilot_agent_runs_total{agent="alpha",outcome="success"} 1');
    expect(fromFirst).toContain('werkpilot_agent_runs_total{agent="doomed",outcome="failure"} 1');
    expect(fromFirst).toMatch(/^werkpilot_dead_letter_queue_size 1$/m);
    expect(pick(await prometheusText(other))).toBe(fromFirst);
  });

  it.skipIf(isMissing(promtool)).each([true, false])('passes promtool check metrics with METRICS_AGENT_HISTOGRAMS=%s', async (agentHistograms) => {
    const h = await start({ agentHistograms });
    await h.startWorker();
    await runAndWait(h, 'alpha', 'completed');
    await runAndWait(h, 'sleepy', 'failed');
    const text = await prometheusText(h.url);
    expect(text.includes('werkpilot_agent_run_duration_seconds_bucket{')).toBe(agentHistograms);
    const result = spawnSync(promtool.path!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(result.stdout + result.stderr).toBe('');
    expect(result.status).toBe(0);
  });
});

describe('cardinality: METRICS_AGENT_HISTOGRAMS', () => {
  it('leaves out the per-agent histograms when off, keeps every per-agent counter and gauge, and always exports histograms by priority', async () => {
    const [on, off] = [await start({ agentHistograms: true }), await start({ agentHistograms: false })];
    for (const h of [on, off]) {
      await h.startWorker();
      await runAndWait(h, 'alpha', 'completed');
      await runAndWait(h, 'beta', 'completed');
      await runAndWait(h, 'flaky', 'completed');
    }
    const [withHistograms, without] = [series(await prometheusText(on.url)), series(await prometheusText(off.url))];
    const names = (m: Map<string, number>) => new Set([...m.keys()].map((k) => k.replace(/\{.*$/, '')));
    expect([...names(withHistograms)].filter((n) => !names(without).has(n)).sort()).toEqual([
      'werkpilot_agent_run_duration_seconds_bucket',
      'werkpilot_agent_run_duration_seconds_count',
      'werkpilot_agent_run_duration_seconds_sum',
    ]);
    for (const h of [on, off]) {
      const m = h === on ? withHistograms : without;
      // Histograms by priority: alpha is priority 1, beta 2, flaky 3 (two attempts).
      expect(m.get('werkpilot_priority_run_duration_seconds_count{priority="1"}')).toBe(1);
      expect(m.get('werkpilot_priority_run_duration_seconds_count{priority="2"}')).toBe(1);
      expect(m.get('werkpilot_priority_run_duration_seconds_count{priority="3"}')).toBe(2);
      expect(m.get('werkpilot_priority_run_duration_seconds_bucket{priority="3",le="+Inf"}')).toBe(2);
      expect(m.get('werkpilot_agent_runs_total{agent="flaky",outcome="failure"}')).toBe(1);
      expect(m.get('werkpilot_agent_score{agent="alpha"}')).toBeGreaterThan(90);
    }
    // The per-agent series that remain: 19 per agent without histograms (the concurrency limit among them), 37 with.
    const perAgent = (m: Map<string, number>) => [...m.keys()].filter((k) => k.includes('agent="alpha"')).length;
    expect(perAgent(without)).toBe(19);
    expect(perAgent(withHistograms)).toBe(37);
  });
});

describe('serving the snapshot', () => {
  /** A raw GET that does not decompress, to see what travels. */
  function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
    return new Promise((resolve, reject) => {
      httpGet(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      }).on('error', reject);
    });
  }

  it('gzips for clients that ask, answers plain curl in plain text, and 304 for a body the client has', async () => {
    const h = await start({ snapshotMaxAgeMs: 60_000 });
    for (const [path, accept] of [
      ['/metrics', 'text/plain'],
      ['/metrics', '*/*'],
      ['/api/metrics', 'application/json'],
    ] as const) {
      const headers = { accept, ...AUTH };
      const plain = await rawGet(`${h.url}${path}`, headers);
      expect(plain.headers['content-encoding'], path).toBeUndefined();
      expect(Number(plain.headers['content-length'])).toBe(plain.body.length);
      const gzipped = await rawGet(`${h.url}${path}`, { ...headers, 'accept-encoding': 'gzip, deflate, br' });
      expect(gzipped.headers['content-encoding']).toBe('gzip');
      expect(gzipped.headers.vary).toMatch(/Accept-Encoding/);
      expect(gunzipSync(gzipped.body).toString()).toBe(plain.body.toString());
      expect(gzipped.headers.etag).toBe(plain.headers.etag);
      const again = await rawGet(`${h.url}${path}`, { ...headers, 'if-none-match': String(plain.headers.etag) });
      expect(again.status).toBe(304);
      expect(again.body.length).toBe(0);
    }
  });

  it('shows an operator action at once, however old a snapshot may be', async () => {
    const h = await start({ snapshotMaxAgeMs: 60_000 });
    expect((await call(h.url, '/api/metrics', { headers: AUTH })).body.agents.gamma.enabled).toBe(true);
    expect((await call(h.url, '/api/agents/gamma/disable', { method: 'POST', headers: AUTH })).status).toBe(200);
    expect((await call(h.url, '/api/metrics', { headers: AUTH })).body.agents.gamma.enabled).toBe(false);
    expect((await call(h.url, '/api/agents/gamma', { headers: AUTH })).body.enabled).toBe(false);
  });

  it('serves the same figures from two schedulers, each updating its own snapshot from the change feed', async () => {
    const h = await start({ sweepPerBuild: 0 });
    const other = await h.replica();
    // Both replicas have built a snapshot before anything runs: what follows reaches them as changes.
    for (const url of [h.url, other]) expect((await call(url, '/api/metrics', { headers: AUTH })).body.agents.alpha.runs).toBe(0);
    await h.startWorker();
    await runAndWait(h, 'alpha', 'completed');
    await runAndWait(h, 'flaky', 'completed');
    await runAndWait(h, 'doomed', 'failed');
    await runAndWait(h, 'sleepy', 'failed');

    const cluster = async (url: string) => {
      const { body } = await call(url, '/api/metrics', { headers: AUTH });
      return { agents: body.agents, queues: body.queues, deadLetterQueue: body.deadLetterQueue, sizes: [body.executionQueueSize, body.deadLetterQueueSize] };
    };
    const [one, two] = [await cluster(h.url), await cluster(other)];
    expect(one.agents.alpha).toMatchObject({ runs: 1, samples: 1 });
    expect(one.agents.flaky).toMatchObject({ runs: 2, failures: 1, successes: 1 });
    expect(one.deadLetterQueue.map((e: { agent: string }) => e.agent).sort()).toEqual(['doomed', 'sleepy']);
    expect(two).toEqual(one);
    const figures = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('werkpilot_'))
        .join('\n');
    expect(figures(await prometheusText(other))).toBe(figures(await prometheusText(h.url)));
  });
});
