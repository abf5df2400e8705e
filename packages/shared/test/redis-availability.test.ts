import { afterEach, describe, expect, it } from 'vitest';
import { BOUNDED_RETRIES_PER_REQUEST, RedisAvailability, createLogger, createRedisConnection, freePort, type Redis } from '@werkpilot/shared';
import { onSharedRedis, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });

const connections: Redis[] = [];
afterEach(() => {
  for (const c of connections.splice(0)) c.disconnect();
});
const connect = (url: string, extra = {}) => {
  const c = createRedisConnection({ url, role: 'test', log }, extra);
  connections.push(c);
  return c;
};

/**
 * The probe timeout is long (2 s) so that "at once" (no probe waited for: under a quarter of it) and
 * "within the probe timeout" (not much past it) stay apart on a loaded machine.
 */
const PROBE_MS = 2000;
const AT_ONCE_MS = PROBE_MS / 4;

describe('Redis availability', () => {
  it('says unavailable at once, with the reason, while nothing listens', async () => {
    const availability = new RedisAvailability({ redis: connect(`redis://127.0.0.1:${await freePort()}`), probeTimeoutMs: PROBE_MS });
    const startedAt = performance.now();
    const verdict = await availability.check();
    expect(performance.now() - startedAt).toBeLessThan(AT_ONCE_MS);
    expect(verdict).toEqual({ available: false, reason: expect.stringMatching(/^redis unavailable: (not connected yet|connection (connecting|reconnecting))/) });
  });

  it.skipIf(onSharedRedis('freezes its Redis'))('finds a frozen Redis within the probe timeout, and finds it back once it thaws', async () => {
    const client = connect(redis.url);
    await waitFor(() => client.status === 'ready', { what: 'connected' });
    const availability = new RedisAvailability({ redis: client, probeTimeoutMs: PROBE_MS });
    expect(await availability.check()).toEqual({ available: true });
    const thaw = redis.freeze();
    try {
      const startedAt = performance.now();
      const verdict = await availability.check();
      const ms = performance.now() - startedAt;
      expect(verdict).toEqual({ available: false, reason: `redis unavailable: no answer to PING within ${PROBE_MS} ms` });
      expect(ms).toBeGreaterThanOrEqual(PROBE_MS - 10);
      expect(ms).toBeLessThan(PROBE_MS + 3000);
      // While it stays frozen, later checks answer at once from the failed probe.
      const again = performance.now();
      expect((await availability.check()).available).toBe(false);
      expect(performance.now() - again).toBeLessThan(AT_ONCE_MS);
    } finally {
      thaw();
    }
    await waitFor(async () => (await availability.check()).available, { what: 'available again after the thaw' });
  });
});

describe("the scheduler's connection", () => {
  it('fails a command queued while Redis is away after a bounded number of reconnects, where a worker connection keeps it', async () => {
    const nowhere = `redis://127.0.0.1:${await freePort()}`;
    const bounded = connect(nowhere, { maxRetriesPerRequest: BOUNDED_RETRIES_PER_REQUEST });
    const unbounded = connect(nowhere);
    const startedAt = Date.now();
    const boundedGet = bounded.get('k').then(
      () => 'answered',
      (err: Error) => err.message,
    );
    let unboundedSettled = false;
    unbounded.get('k').then(
      () => (unboundedSettled = true),
      () => (unboundedSettled = true),
    );
    expect(await boundedGet).toMatch(/max retries per request/i);
    const ms = Date.now() - startedAt;
    console.log(`[measure] a command queued with Redis away fails after ${ms} ms on the scheduler's connection`);
    expect(ms).toBeLessThan(5000);
    expect(unboundedSettled).toBe(false);
  });
});
