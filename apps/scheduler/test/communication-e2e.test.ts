import { describe, expect, it } from 'vitest';
import { freePort, type BusEvent } from '@werkpilot/shared';
import { openEventStream, startApp, stopApps, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type EventStream } from '@werkpilot/test-support';

const redis = useTestRedis();

const agentsDir = writeAgentsDir({
  'lead-scoring.ts': `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'lead-scoring',
  async run(ctx) { await ctx.publish('leads:scored', { hot: 4 }); return { hot: 4 }; },
  onRequest: () => ({ summary: '4 hot leads' }),
});
`,
  'daily-report.ts': `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'daily-report',
  async run(ctx) { return { leads: await ctx.request('lead-scoring', { want: 'summary' }) }; },
});
`,
  'long.ts': `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'long',
  timeoutMs: 60000,
  async run(ctx) { await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve)); return 'stopped'; },
});
`,
});

const TOKEN = 'e2e-token';
const auth = { authorization: `Bearer ${TOKEN}` };

describe('agent communication through the real processes', () => {
  it('streams the same events over SSE and Redis SUBSCRIBE, answers ctx.request, and cancels a run over HTTP', async () => {
    const prefix = uniquePrefix();
    const port = await freePort();
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, PORT: String(port), DASHBOARD_TOKEN: TOKEN };
    const scheduler = startApp('scheduler', env);
    const worker = startApp('worker', env);
    const base = `http://127.0.0.1:${port}`;
    let stream: EventStream | undefined;
    try {
      await Promise.all([scheduler.waitForLog(/dashboard on/, 45_000), worker.waitForLog(/worker online/, 45_000)]);
      stream = await openEventStream(`${base}/api/events?type=agent:*,leads:*`, auth);
      const sse = stream.events;
      const subscriber = redis.client();
      const raw: BusEvent[] = [];
      subscriber.on('message', (_c: string, m: string) => raw.push(JSON.parse(m) as BusEvent));
      await subscriber.subscribe(`${prefix}:events`);

      const run = async (agent: string) => {
        const response = await fetch(`${base}/api/agents/${agent}/run`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{}' });
        expect(response.status).toBe(202);
        return ((await response.json()) as { runId: string }).runId;
      };
      const scoringRun = await run('lead-scoring');
      const reportRun = await run('daily-report');
      const completed = (runId: string) => (e: BusEvent) => e.type === 'agent:completed' && e.data.runId === runId;
      await waitFor(() => sse.some(completed(scoringRun)) && sse.some(completed(reportRun)), { timeoutMs: 20_000, what: 'both runs over SSE' });
      await waitFor(() => raw.some(completed(reportRun)), { what: 'the same events over SUBSCRIBE' });

      const filtered = (events: BusEvent[]) => events.filter((e) => e.type.startsWith('agent:') || e.type.startsWith('leads:')).map((e) => JSON.stringify(e));
      expect(filtered(sse)).toEqual(filtered(raw).slice(0, filtered(sse).length));
      expect(sse.find((e) => e.type === 'leads:scored')).toMatchObject({ agent: 'lead-scoring', data: { payload: { hot: 4 } } });
      // agent:completed goes out just before BullMQ stores the result: wait for the stored run.
      const report = await waitFor(async () => {
        const body = (await (await fetch(`${base}/api/runs/${reportRun}`, { headers: auth })).json()) as { state: string; result: unknown };
        return body.state === 'completed' && body.result ? body : undefined;
      });
      expect(JSON.stringify(report.result)).toContain('4 hot leads');

      const longRun = await run('long');
      await waitFor(() => sse.some((e) => e.type === 'agent:started' && e.data.runId === longRun), { timeoutMs: 20_000, what: 'the long run to start' });
      const cancel = await fetch(`${base}/api/runs/${longRun}/cancel`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ reason: 'e2e says stop' }),
      });
      expect(cancel.status).toBe(200);
      expect(await cancel.json()).toMatchObject({ runId: longRun, outcome: 'aborting', state: 'running' });
      await waitFor(() => sse.some((e) => e.type === 'agent:cancelled' && e.data.runId === longRun), { what: 'agent:cancelled over SSE' });
      // Its one outcome: cancelled, not a failure.
      expect(sse.find((e) => e.type === 'agent:cancelled' && e.data.runId === longRun)).toMatchObject({ data: { reason: 'e2e says stop', state: 'running' } });
      expect(sse.some((e) => e.type === 'agent:failed' && e.data.runId === longRun)).toBe(false);

      const unknown = await fetch(`${base}/api/runs/no-such-run/cancel`, { method: 'POST', headers: auth });
      expect(unknown.status).toBe(404);
      expect(await unknown.json()).toEqual({ error: 'unknown run no-such-run' });

      const recent = (await (await fetch(`${base}/api/events/recent?limit=3&type=agent:*`, { headers: auth })).json()) as { events: BusEvent[] };
      expect(recent.events).toHaveLength(3);
      expect(recent.events.at(-1)?.data.runId).toBe(longRun);
    } finally {
      stream?.close();
      await stopApps([scheduler, worker]);
    }
  }, 90_000);
});
