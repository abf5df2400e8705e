import { afterAll, describe, expect, it } from 'vitest';
import { MAX_ERROR_MESSAGE_BYTES, MAX_STACK_BYTES } from '@werkpilot/shared';
import { agentSource, startApp, startAppCluster, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppCluster } from '@werkpilot/test-support';

const redis = useTestRedis();
const TOKEN = 'size-limits-token';
const once = { retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 100 } } };

const agentsDir = writeAgentsDir({
  // Throws an error with a 5 MB message (and so a 5 MB stack).
  'loud-failure.ts': agentSource({ name: 'loud-failure', ...once }, "throw new Error('disk full: '.padEnd(5_000_000, 'x'));"),
  // Publishes a 100 KiB payload (refused) and a 60 KiB one (published); returns what happened.
  'publisher.ts': agentSource(
    { name: 'publisher', ...once },
    `let refused = null;
     try { await ctx.publish('big:report', 'r'.repeat(100 * 1024)); } catch (err) { refused = { name: err.name, message: err.message }; }
     await ctx.publish('big:report', 'r'.repeat(60 * 1024));
     return { refused };`,
  ),
  // Asks an agent whose onRequest throws a 1 MB message.
  'asker.ts': agentSource(
    { name: 'asker', ...once },
    `try { await ctx.request('answerer', {}, { timeoutMs: 5000 }); return { answered: true }; } catch (err) { return { name: err.name, bytes: Buffer.byteLength(err.message), tail: err.message.slice(-40) }; }`,
  ),
  'answerer.ts': agentSource({ name: 'answerer' }, 'return null;', "onRequest() { throw new Error('no: '.padEnd(1_000_000, 'n')); },"),
});

const clusters: AppCluster[] = [];
afterAll(async () => {
  for (const c of clusters) await c.stop();
});

const MARKER = /… \[truncated \d+ bytes\]$/;
const bytes = (text: string) => Buffer.byteLength(text);

describe('sizes an agent decides', () => {
  it('are capped where they reach Redis or a subscriber: errors and stacks truncated with a marker, big publishes refused, RPC errors truncated', async () => {
    const cluster = await startAppCluster({ REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, DASHBOARD_TOKEN: TOKEN });
    clusters.push(cluster);
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const api = async (path: string, init: RequestInit = {}) => (await fetch(`${cluster.url}${path}`, { ...init, headers })).json() as Promise<Record<string, unknown>>;
    const runToEnd = async (agent: string) => {
      const { runId } = (await api(`/api/agents/${agent}/run`, { method: 'POST', body: '{}' })) as { runId: string };
      return waitFor(
        async () => {
          const run = (await api(`/api/runs/${runId}`)) as { state: string; result?: unknown; error?: string };
          return run.state === 'completed' || run.state === 'failed' ? run : undefined;
        },
        { timeoutMs: 20_000, what: `the run of ${agent}` },
      );
    };

    // A 5 MB error: the DLQ keeps 4 KiB of the message and 16 KiB of the stack, each marked.
    const failed = await runToEnd('loud-failure');
    expect(failed.state).toBe('failed');
    // The list shows previews of at most 2 KiB per field; the entry itself is complete.
    const { entries } = (await api('/api/dlq')) as { entries: { id: string; agent: string }[] };
    const { id } = entries.find((e) => e.agent === 'loud-failure')!;
    const entry = (await api(`/api/dlq/${encodeURIComponent(id)}`)) as { error: string; stacktrace: string[] };
    expect(bytes(entry.error)).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);
    expect(entry.error).toMatch(/^disk full: x+… \[truncated \d+ bytes\]$/);
    expect(entry.stacktrace.length).toBeGreaterThan(0);
    for (const stack of entry.stacktrace) {
      expect(bytes(stack)).toBeLessThanOrEqual(MAX_STACK_BYTES);
      expect(stack).toMatch(MARKER);
    }
    console.log(`[measure] a 5 MB error: DLQ message ${bytes(entry.error)} bytes, stack ${Math.max(...entry.stacktrace.map(bytes))} bytes`);
    const agent = (await api('/api/agents/loud-failure')) as { lastError: string };
    expect(bytes(agent.lastError)).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);
    const { events } = (await api('/api/events/recent?limit=100&agent=loud-failure')) as { events: { type: string; data: { error?: string } }[] };
    for (const e of events.filter((ev) => ev.data.error !== undefined)) expect(bytes(e.data.error!)).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);

    // ctx.publish: 100 KiB refused with a clear error, 60 KiB published.
    const published = await runToEnd('publisher');
    expect(published.result).toEqual({
      outcome: 'success',
      durationMs: expect.any(Number),
      workerId: expect.any(String),
      result: {
        refused: {
          name: 'PublishPayloadError',
          message: "ctx.publish('big:report'): the payload is 102402 bytes; the limit is 65536 (64 KiB) — store large data elsewhere and publish its key",
        },
      },
    });
    const bigEvents = (await api('/api/events/recent?limit=100&type=big:report')) as { events: { data: { payload: string } }[] };
    expect(bigEvents.events.map((e) => e.data.payload.length)).toEqual([60 * 1024]);

    // An onRequest that throws a 1 MB message: the caller gets 4 KiB of it, marked.
    const asked = await runToEnd('asker');
    const answer = (asked.result as { result: { name: string; bytes: number; tail: string } }).result;
    expect(answer.name).toBe('RemoteRequestError');
    expect(answer.bytes).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);
    expect(answer.tail).toMatch(MARKER);
  }, 60_000);
});

describe('numbers and problems in the registry', () => {
  it('are all reported at once: a bad cron and an unknown dependency of one agent, and a timeout no timer can wait for', async () => {
    const badDir = writeAgentsDir({
      'crm-sync.ts': agentSource({ name: 'crm-sync', schedule: { cron: '61 * * * *' }, dependsOn: ['crm-api'] }),
      'report.ts': agentSource({ name: 'report', timeoutMs: 3_000_000_000 }),
    });
    const prefix = uniquePrefix();
    const scheduler = startApp('scheduler', { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: badDir, PORT: '0' });
    expect(await scheduler.exited).toBe(2);
    const lines = scheduler.output().trim().split('\n');
    expect(lines[0]).toBe('werkpilot scheduler: the agent registry has 3 problems:');
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(/^ {2}- agent "crm-sync" \(crm-sync\.ts\): cron "61 \* \* \* \*" is invalid/),
      '  - agent "report" (report.ts): timeoutMs must be at most 2147483647 ms (2^31 − 1, about 24.8 days: Node fires a longer timer at once), got 3000000000',
      '  - agent "crm-sync" depends on unknown agent "crm-api"',
    ]);
    expect(await redis.client().keys(`{${prefix}}:*`)).toEqual([]);
  }, 30_000);
});
