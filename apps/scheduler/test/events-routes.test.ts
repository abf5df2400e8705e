import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EventBus, createKeys, createLogger, type BusEvent } from '@werkpilot/shared';
import { openEventStream, openStalledEventStream, uniquePrefix, useTestRedis, waitFor, type EventStream } from '@werkpilot/test-support';
import { errorHandler } from '../src/http/error-handler.js';
import { eventsRoutes, type EventsRouter } from '../src/http/events-routes.js';
import type { LiveStreamLimits } from '../src/http/live-event-streams.js';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Setup {
  url: string;
  /** The bus the server streams from. */
  serverBus: EventBus;
  /** Another process's bus, publishing through Redis. */
  publisher: EventBus;
  /** The publisher's connection, for pipelining a flood of its events. */
  publisherRedis: ReturnType<typeof redis.client>;
  router: EventsRouter;
}

async function setup(limits: Partial<LiveStreamLimits> = {}): Promise<Setup> {
  const keys = createKeys(uniquePrefix());
  const serverBus = new EventBus({ redis: redis.client(), keys, log });
  const publisherRedis = redis.client();
  const publisher = new EventBus({ redis: publisherRedis, keys, log });
  const router = eventsRoutes({ bus: serverBus, log, limits });
  const app = express();
  app.use(router);
  app.use(errorHandler(log));
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(0, () => resolve(s));
  });
  cleanups.push(
    () => serverBus.close(),
    () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, serverBus, publisher, publisherRedis, router };
}

/** Opens an SSE stream (closed after the test) and resolves once the subscription is live. */
async function openStream(url: string): Promise<EventStream> {
  const stream = await openEventStream(url);
  cleanups.push(async () => stream.close());
  return stream;
}

describe('GET /api/events', () => {
  it('streams bus events from other processes in publish order', async () => {
    const { url, publisher } = await setup();
    const stream = await openStream(`${url}/api/events`);
    for (let i = 0; i < 50; i++) await publisher.publish('agent:started', { runId: String(i) }, 'crm-sync');
    await waitFor(() => stream.events.length === 50, { what: '50 events' });
    expect(stream.events.map((e) => e.data.runId)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    expect(stream.events[0]).toMatchObject({ type: 'agent:started', agent: 'crm-sync' });
  });

  it('passes only the event types and agents asked for', async () => {
    const { url, publisher } = await setup();
    const byType = await openStream(`${url}/api/events?type=agent:*,circuit:*`);
    const byAgent = await openStream(`${url}/api/events?agent=lead-scoring`);
    const both = await openStream(`${url}/api/events?type=agent:failed&agent=lead-scoring,crm-sync`);
    await publisher.publish('agent:started', {}, 'crm-sync');
    await publisher.publish('memory:gc', {});
    await publisher.publish('circuit:opened', {}, 'lead-scoring');
    await publisher.publish('agent:failed', {}, 'lead-scoring');
    await publisher.publish('health:changed', {}, 'lead-scoring');
    await publisher.publish('agent:failed', {}, 'daily-report');
    await publisher.publish('agent:completed', { last: true }, 'lead-scoring');
    await waitFor(() => byType.events.some((e) => e.data.last) && byAgent.events.some((e) => e.data.last));
    await waitFor(() => both.events.length === 1);
    const summary = (s: EventStream) => s.events.map((e) => `${e.type}/${e.agent ?? '-'}`);
    expect(summary(byType)).toEqual(['agent:started/crm-sync', 'circuit:opened/lead-scoring', 'agent:failed/lead-scoring', 'agent:failed/daily-report', 'agent:completed/lead-scoring']);
    expect(summary(byAgent)).toEqual(['circuit:opened/lead-scoring', 'agent:failed/lead-scoring', 'health:changed/lead-scoring', 'agent:completed/lead-scoring']);
    expect(summary(both)).toEqual(['agent:failed/lead-scoring']);
  });

  it('sends heartbeat comments on an idle stream', async () => {
    const { url } = await setup({ heartbeatMs: 50 });
    const stream = await openStream(`${url}/api/events`);
    await waitFor(() => stream.comments.filter((c) => c.startsWith('heartbeat')).length >= 2, { what: 'two heartbeats' });
    expect(stream.events).toEqual([]);
  });

  it('frees the subscription when the last client disconnects', async () => {
    const { url, router, serverBus } = await setup();
    const handlers = () => (serverBus as unknown as { handlers: Set<unknown> }).handlers.size;
    const a = await openStream(`${url}/api/events`);
    const b = await openStream(`${url}/api/events?type=agent:*`);
    expect(router.activeStreams).toBe(2);
    // One bus handler serves every stream.
    expect(handlers()).toBe(1);
    a.close();
    b.close();
    await waitFor(() => router.activeStreams === 0 && handlers() === 0, { what: 'streams to be released' });
  });

  it('refuses a stream beyond maxClients with 503 and Retry-After, and admits one again when a slot frees', async () => {
    const { url, router } = await setup({ maxClients: 2 });
    const a = await openStream(`${url}/api/events`);
    await openStream(`${url}/api/events?type=agent:*`);
    const refused = await fetch(`${url}/api/events`);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('10');
    expect(await refused.json()).toEqual({
      error: 'too many live event streams: 2 are open (SSE_MAX_CLIENTS); retry in 10 s, or read /api/events/recent',
    });
    a.close();
    await waitFor(() => router.activeStreams === 1, { what: 'a slot to free' });
    await openStream(`${url}/api/events`);
    expect(router.activeStreams).toBe(2);
  });

  it('serialises each event once, however many streams it goes to', async () => {
    const { url, publisher } = await setup();
    const streams = await Promise.all(Array.from({ length: 10 }, () => openStream(`${url}/api/events`)));
    const stringify = vi.spyOn(JSON, 'stringify');
    try {
      await publisher.publish('serialise:probe', { n: 1 });
      await waitFor(() => streams.every((s) => s.events.length === 1), { what: 'the event on every stream' });
      const ofProbe = stringify.mock.calls.filter(([value]) => (value as BusEvent | undefined)?.type === 'serialise:probe');
      // Once by the publisher for Redis, once by the scheduler for all ten streams.
      expect(ofProbe).toHaveLength(2);
    } finally {
      stringify.mockRestore();
    }
  });

  it('drops a client that stopped reading once its backlog passes the bound, and keeps serving the others', async () => {
    const { url, publisher, publisherRedis, router } = await setup({ maxBufferedBytes: 64 * 1024 });
    const stalled = await openStalledEventStream(url);
    const reader = await openStream(`${url}/api/events`);
    // 4000 events of 4 KiB: 16 MiB, more than loopback socket buffers take.
    const payload = 'x'.repeat(4096);
    for (let i = 0; i < 4000; i += 100) {
      const pipeline = publisherRedis.pipeline();
      for (let j = i; j < i + 100; j++) publisher.addTo(pipeline, publisher.event('flood:event', { n: j, payload }));
      await pipeline.exec();
    }
    await waitFor(() => router.streams.dropped === 1, { what: 'the stalled stream to be dropped' });
    // Reading again, the client finds its stream ended.
    stalled.resume();
    await stalled.closed;
    await waitFor(() => reader.events.length === 4000, { timeoutMs: 20_000, what: 'every event on the reading stream' });
    expect(reader.events.map((e) => e.data.n)).toEqual(Array.from({ length: 4000 }, (_, i) => i));
    expect(router.activeStreams).toBe(1);
  });

  it('drops a client whose socket has not drained for stallMs, however little it holds', async () => {
    const { url, publisher, publisherRedis, router } = await setup({ maxBufferedBytes: 512 * 1024 * 1024, stallMs: 300 });
    const stalled = await openStalledEventStream(url);
    const payload = 'x'.repeat(4096);
    // 16 MiB back the server's writes up; then nothing more is sent, so only the stall can drop it.
    for (let i = 0; i < 4000; i += 100) {
      const pipeline = publisherRedis.pipeline();
      for (let j = i; j < i + 100; j++) publisher.addTo(pipeline, publisher.event('flood:event', { n: j, payload }));
      await pipeline.exec();
    }
    // 16 MiB never reach the 512 MiB backlog bound: the stall is what drops it.
    await waitFor(() => router.streams.dropped === 1, { what: 'the stalled stream to be dropped' });
    expect(router.activeStreams).toBe(0);
    stalled.resume();
    await stalled.closed;
  });

  it('answers 400 for a malformed filter', async () => {
    const { url } = await setup();
    const response = await fetch(`${url}/api/events?type=agent%20started`);
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({ error: expect.stringMatching(/^type: "agent started" is not an event type pattern/) });
    const badAgent = await fetch(`${url}/api/events?agent=Bad_Name`);
    expect(badAgent.status).toBe(400);
  });
});

describe('GET /api/events/recent', () => {
  it('returns the last N events of the history, oldest first', async () => {
    const { url, publisher } = await setup();
    for (let i = 0; i < 12; i++) await publisher.publish(i % 2 ? 'agent:completed' : 'agent:started', { n: i }, 'crm-sync');
    const body = (await (await fetch(`${url}/api/events/recent?limit=5`)).json()) as { events: BusEvent[] };
    expect(body.events.map((e) => e.data.n)).toEqual([7, 8, 9, 10, 11]);
    const filtered = (await (await fetch(`${url}/api/events/recent?limit=6&type=agent:started`)).json()) as { events: BusEvent[] };
    expect(filtered.events.map((e) => e.data.n)).toEqual([6, 8, 10]);
    const all = (await (await fetch(`${url}/api/events/recent`)).json()) as { events: BusEvent[] };
    expect(all.events).toHaveLength(12);
  });

  it('answers a glob bomb at once, and refuses a 10 000-character pattern at once', async () => {
    const { url, publisher } = await setup();
    for (let i = 0; i < 50; i++) await publisher.publish('agent:started', { n: i }, 'crm-sync');
    // The request that froze the event loop when the glob became the regex ^.*.*….*X$.
    let started = performance.now();
    const bomb = await fetch(`${url}/api/events/recent?limit=1000&type=${'*'.repeat(40)}X`);
    expect(bomb.status).toBe(200);
    expect(await bomb.json()).toEqual({ events: [] });
    expect(performance.now() - started).toBeLessThan(1000);

    started = performance.now();
    const huge = await fetch(`${url}/api/events/recent?type=${'*'.repeat(9999)}X`);
    expect(huge.status).toBe(400);
    expect(await huge.json()).toEqual({ error: 'type: at most 20 values of at most 100 characters each' });
    expect(performance.now() - started).toBeLessThan(1000);
    const stream = await fetch(`${url}/api/events?type=${'*'.repeat(9999)}X`);
    expect(stream.status).toBe(400);
  });

  it('answers 400 for a limit that is not a whole number up to 1000', async () => {
    const { url } = await setup();
    for (const limit of ['abc', '-1', '1001']) {
      const response = await fetch(`${url}/api/events/recent?limit=${limit}`);
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: string }).error).toMatch(/limit/);
    }
  });
});
