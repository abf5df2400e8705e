import { afterEach, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import {
  RemoteRequestError,
  RequestPayloadError,
  RequestShutdownError,
  RequestTimeoutError,
  RpcClient,
  buildRegistry,
  createKeys,
  createLogger,
  percentiles,
  request,
  rpcRequestsKey,
  startRpcResponder,
  type AgentDefinition,
  type Keys,
  type RpcResponder,
} from '@werkpilot/shared';
import { onSharedRedis, uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Setup {
  keys: Keys;
  admin: Redis;
  client: RpcClient;
  /** Lists our keys once everything the client sent has run (see keysUnder). */
  keysLeft(): Promise<string[]>;
  respond(agents: Partial<AgentDefinition>[], workerId?: string): RpcResponder;
}

function setup(): Setup {
  const keys = createKeys(uniquePrefix());
  const admin = redis.client();
  const clientRedis = redis.client();
  const client = new RpcClient({ redis: clientRedis, keys, log });
  cleanups.push(() => client.close());
  return {
    keys,
    admin,
    client,
    keysLeft: () => keysUnder(admin, keys, clientRedis),
    respond(agents, workerId = 'worker-1') {
      const registry = buildRegistry(agents.map((a) => ({ definition: { run: async () => null, ...a }, source: `/t/${a.name}.ts` })));
      const responder = startRpcResponder({ redis: redis.client(), keys, log, agents: registry.list(), workerId });
      cleanups.push(() => responder.close());
      return responder;
    },
  };
}

/**
 * A timed-out request is rejected at once and withdrawn by a command sent right then on the client's
 * connection; a PING on that connection returns after it ran, so what is left is really left.
 */
async function keysUnder(admin: Redis, keys: Keys, clientRedis: Redis): Promise<string[]> {
  await clientRedis.ping();
  return admin.keys(`${keys.bullPrefix}:*`);
}

describe('agent requests', () => {
  it("answers with the target agent's onRequest result", async () => {
    const { client, respond } = setup();
    respond([{ name: 'lead-scoring', onRequest: (payload) => ({ echoed: payload, summary: 'fresh' }) }]);
    await expect(client.request('lead-scoring', { top: 3 })).resolves.toEqual({ echoed: { top: 3 }, summary: 'fresh' });
  });

  it("rejects with the responder's message and a typed error when onRequest throws", async () => {
    const { client, respond } = setup();
    respond([
      {
        name: 'scorer',
        onRequest: () => {
          throw new TypeError('no scores for segment "emea"');
        },
      },
    ]);
    const err = await client.request('scorer', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteRequestError);
    expect((err as RemoteRequestError).message).toBe('no scores for segment "emea"');
    expect((err as RemoteRequestError).remoteName).toBe('TypeError');
    expect((err as RemoteRequestError).agent).toBe('scorer');
  });

  it('times out a slow responder with an error naming the agent and the timeout, and leaves nothing queued', async () => {
    const { client, respond, admin, keys } = setup();
    respond([{ name: 'slow', onRequest: (_p, ctx) => new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve('late'))) }]);
    const err = await client.request('slow', {}, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestTimeoutError);
    expect((err as Error).message).toMatch(/request to agent slow timed out after 200 ms/);
    expect(client.pendingCount).toBe(0);
    expect(await admin.exists(rpcRequestsKey(keys, 'slow'))).toBe(0);
  });

  it('times out when no worker hosts the agent, and withdraws the request', async () => {
    const { client, keysLeft } = setup();
    const err = await client.request('nobody-home', { q: 1 }, { timeoutMs: 150 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RequestTimeoutError);
    expect(err).toMatchObject({ agent: 'nobody-home', timeoutMs: 150 });
    expect(await keysLeft()).toEqual([]);
  });

  it('times out for an agent that defines no onRequest, even while its worker is live', async () => {
    const { client, respond } = setup();
    const responder = respond([{ name: 'quiet' }, { name: 'chatty', onRequest: () => 'hi' }]);
    expect(responder.agents).toEqual(['chatty']);
    await expect(client.request('quiet', {}, { timeoutMs: 150 })).rejects.toBeInstanceOf(RequestTimeoutError);
    await expect(client.request('chatty')).resolves.toBe('hi');
  });

  it('refuses a payload over 1 MiB or not JSON-serialisable before sending anything', async () => {
    const { client, respond, keysLeft } = setup();
    const seen: unknown[] = [];
    respond([{ name: 'sink', onRequest: (payload) => seen.push(payload) }]);
    const circular: Record<string, unknown> = {};
    circular.self = circular;

    await expect(client.request('sink', 'x'.repeat(1024 * 1024 + 1))).rejects.toThrow(/payload of the request to agent sink is \d+ bytes; the limit is 1048576/);
    await expect(client.request('sink', circular)).rejects.toThrow(RequestPayloadError);
    await expect(client.request('sink', 10n)).rejects.toThrow(/not JSON-serialisable/);
    await expect(client.request('sink', () => 1)).rejects.toThrow(/not JSON-serialisable/);
    expect(seen).toEqual([]);
    expect(await keysLeft()).toEqual([]);
  });

  it('rejects with a clear error when the result is over 1 MiB or not JSON', async () => {
    const { client, respond } = setup();
    respond([
      { name: 'big', onRequest: () => 'y'.repeat(1024 * 1024 + 10) },
      { name: 'odd', onRequest: () => ({ n: 1n }) },
    ]);
    await expect(client.request('big')).rejects.toThrow(/result of agent big's onRequest is \d+ bytes; the limit is 1048576/);
    await expect(client.request('odd')).rejects.toThrow(/result of agent odd's onRequest is not JSON-serialisable/);
  });

  it('rejects bad agent names and timeouts as input errors', async () => {
    const { client } = setup();
    await expect(client.request('Not An Agent')).rejects.toThrow(/agent must be an agent name/);
    await expect(client.request('a', {}, { timeoutMs: -1 })).rejects.toThrow(/timeoutMs must be a positive number/);
    // Past 2^31 − 1 ms a timer fires at once: refused, not a request that times out immediately.
    await expect(client.request('a', {}, { timeoutMs: 2 ** 31 })).rejects.toThrow('request: timeoutMs must be a positive number of milliseconds up to 2147483647, got 2147483648');
  });

  it("sends the timeout as a duration, never a deadline of the caller's clock, so skewed clocks do not matter", async () => {
    const { client, admin, keys, respond } = setup();
    const asked = client.request('clocked', { q: 1 }, { timeoutMs: 3000 });
    const [queued] = await waitFor(
      async () => {
        const entries = await admin.lrange(rpcRequestsKey(keys, 'clocked'), 0, -1);
        return entries.length > 0 ? entries : undefined;
      },
      { what: 'the request queued' },
    );
    const envelope = JSON.parse(queued!) as Record<string, unknown>;
    expect(envelope).toMatchObject({ agent: 'clocked', timeoutMs: 3000, payload: { q: 1 } });
    expect(envelope).not.toHaveProperty('deadline');
    respond([{ name: 'clocked', onRequest: async () => 'answered' }]);
    expect(await asked).toBe('answered');
  });

  it('rejects pending requests with a shutdown error when the client closes, and withdraws them', async () => {
    const { client, admin, keys, keysLeft } = setup();
    const settled = Promise.allSettled([client.request('absent', 1), client.request('absent', 2), client.request('other', 3)]);
    await waitFor(async () => (await admin.llen(rpcRequestsKey(keys, 'absent'))) === 2);
    await client.close();
    const outcomes = await settled;
    for (const outcome of outcomes) {
      expect(outcome.status).toBe('rejected');
      expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(RequestShutdownError);
    }
    expect(((outcomes[2] as PromiseRejectedResult).reason as Error).message).toBe('request to agent other abandoned: this process is shutting down');
    expect(client.pendingCount).toBe(0);
    expect(await keysLeft()).toEqual([]);
    await expect(client.request('absent')).rejects.toBeInstanceOf(RequestShutdownError);
  });

  it('answers the requests it already took when the responder closes, then takes no more', async () => {
    const { client, respond, admin, keys } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const responder = respond([
      {
        name: 'gated',
        onRequest: async () => {
          await gate;
          return 'done';
        },
      },
    ]);
    const first = client.request('gated', null, { timeoutMs: 10_000 });
    await waitFor(() => responder.inFlight === 1);
    const closing = responder.close();
    release();
    await expect(first).resolves.toBe('done');
    await closing;
    // Long enough that the test sees it queued before it times out and is withdrawn.
    const second = client.request('gated', null, { timeoutMs: 3000 });
    await waitFor(async () => (await admin.llen(rpcRequestsKey(keys, 'gated'))) === 1);
    await expect(second).rejects.toBeInstanceOf(RequestTimeoutError);
  });

  it('works from outside agents through request()', async () => {
    const { keys, respond } = setup();
    respond([{ name: 'lead-scoring', onRequest: (_p, ctx) => ({ from: ctx.agent }) }]);
    await expect(request({ redis: redis.client(), keys, log }, 'lead-scoring', {})).resolves.toEqual({ from: 'lead-scoring' });
  });

  it('leaves no keys, pending entries or listeners behind after 10k requests', async () => {
    const { client, respond, keysLeft } = setup();
    const responder = respond([{ name: 'echo', onRequest: (n) => n }]);
    const listenersBefore = process.listenerCount('exit') + process.listenerCount('beforeExit');
    await client.request('echo', 0); // the reply subscription exists from here on
    const subscriberListeners = (client as unknown as { subscriber: Redis }).subscriber.listenerCount('message');

    for (let batch = 0; batch < 20; batch++) {
      const answers = await Promise.all(Array.from({ length: 500 }, (_, i) => client.request<number>('echo', batch * 500 + i, { timeoutMs: 20_000 })));
      expect(answers[499]).toBe(batch * 500 + 499);
    }
    // Some requests that time out, to exercise that cleanup path too.
    await Promise.allSettled(Array.from({ length: 20 }, () => client.request('no-responder', null, { timeoutMs: 50 })));

    expect(client.pendingCount).toBe(0);
    expect(responder.inFlight).toBe(0);
    expect((client as unknown as { subscriber: Redis }).subscriber.listenerCount('message')).toBe(subscriberListeners);
    expect(process.listenerCount('exit') + process.listenerCount('beforeExit')).toBe(listenersBefore);
    expect(await keysLeft()).toEqual([]);
  }, 60_000);

  it.skipIf(onSharedRedis('restarts its Redis'))(
    'keeps answering after a Redis restart',
    async () => {
      const { client, respond } = setup();
      respond([{ name: 'echo', onRequest: (n) => n }]);
      await expect(client.request('echo', 1)).resolves.toBe(1);
      await redis.restart({ downMs: 300 });
      await waitFor(async () => (await client.request('echo', 2, { timeoutMs: 1000 }).catch(() => undefined)) === 2, {
        timeoutMs: 20_000,
        intervalMs: 200,
        what: 'requests to be answered again',
      });
      await expect(client.request('echo', 3)).resolves.toBe(3);
    },
    40_000,
  );

  // The round-trip figures against their targets are the bench's (rpc-round-trip); this prints them.
  it('answers 2000 sequential requests, each with its own payload', async () => {
    const { client, respond } = setup();
    respond([{ name: 'echo', onRequest: (n) => n }]);
    for (let i = 0; i < 200; i++) await client.request('echo', i); // warm up JIT and connections
    const samples: number[] = [];
    const wrong: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const started = performance.now();
      const answer = await client.request<{ i: number }>('echo', { i });
      samples.push(performance.now() - started);
      if (answer?.i !== i) wrong.push(`request ${i} answered ${JSON.stringify(answer)}`);
    }
    const { p50, p99 } = percentiles(samples);
    console.log(`rpc round trip over ${samples.length} requests: p50 ${p50!.toFixed(3)} ms, p99 ${p99!.toFixed(3)} ms`);
    expect(wrong).toEqual([]);
  }, 60_000);
});
