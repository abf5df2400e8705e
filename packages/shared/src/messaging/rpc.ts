/**
 * Agent requests: `ctx.request(agent, payload, { timeoutMs })` across processes and machines
 * (docs/design.md#agent-requests).
 *
 * Design
 * - Every agent has a request list, `{prefix}:rpc:<agent>:requests`. A caller RPUSHes one JSON
 *   envelope `{ id, from, agent, replyTo, timeoutMs, payload }` and keeps the list's TTL at least as
 *   long as the request can be answered (one Lua call), so a list nobody pops expires by itself.
 * - Each worker process runs one RpcResponder for the agents it hosts that define `onRequest`: a
 *   dedicated connection BLPOPs all their lists at once. Redis hands each element to exactly one
 *   blocked client, so a request is answered by exactly one worker however many host the agent.
 *   Delivery is at most once: a responder that dies between pop and reply leaves the caller to
 *   time out; nothing is ever answered twice.
 * - Replies travel on the caller's own pub/sub channel, `<prefix>:rpc:reply:<clientId>` (one
 *   subscriber connection per RpcClient, subscribed before the first request is pushed), and are
 *   matched by id to a pending promise.
 * - Timeout: the caller rejects with RequestTimeoutError and LREMs its envelope, so an unanswered
 *   request leaves no key or list entry behind and no responder runs it late. The envelope carries
 *   the timeout as a duration, never a deadline: caller and responder run on machines whose clocks
 *   differ, and a deadline compared across them would abort requests early (or never). A responder
 *   gives `onRequest` that long from when it pops the request — the caller's own timer is the one
 *   that decides; a reply after it is dropped. An agent without `onRequest` has no responder: timeout.
 * - An `onRequest` error travels back as its message, capped at 4 KiB (size-limits.ts).
 * - Payloads and results are serialised and size-checked (1 MiB) before anything is sent.
 * - close(): the client rejects its pending requests with RequestShutdownError; the responder stops
 *   popping (CLIENT UNBLOCK of its blocking connection) and finishes what it already popped.
 */
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import { InvalidInputError, RemoteRequestError, RequestPayloadError, RequestShutdownError, RequestTimeoutError } from '../process/errors.js';
import { type Keys, rpcReplyChannel, rpcRequestsKey } from '../redis/keys.js';
import { runInScope } from '../process/process-faults.js';
import { MAX_ERROR_MESSAGE_BYTES, MAX_TIMER_MS, truncateBytes } from '../run/size-limits.js';
import { duplicateRedisConnection, isClusterConnection } from '../redis/redis-connection.js';

/** Largest serialised payload or result a request may carry. */
export const MAX_REQUEST_BYTES = 1024 * 1024;
export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
/** How long a request list outlives the deadline of its newest entry. */
const LIST_TTL_SLACK_MS = 10_000;

const AGENT_NAME = /^[a-z0-9][a-z0-9-]*$/;

// Invariant: a request list lives at least until the deadline (+ slack) of every entry in it, and
// expires once none is left to answer. KEYS[1] list; ARGV[1] envelope; ARGV[2] minimum TTL in ms.
const PUSH_REQUEST_LUA = `
redis.call('RPUSH', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`;

export interface RequestOptions {
  /** Reject with RequestTimeoutError when no answer arrived by then. Default 5000. */
  timeoutMs?: number;
  /** Who asks (an agent's name, `api`, `cli`); shown in the responder's log. */
  from?: string;
}

interface Envelope {
  id: string;
  from: string;
  agent: string;
  replyTo: string;
  /** The caller's timeout: a duration, so no two clocks are compared. */
  timeoutMs: number;
  payload: unknown;
}

type Reply = { id: string; ok: true; result: unknown } | { id: string; ok: false; error: string; name: string };

interface Pending {
  agent: string;
  key: string;
  envelope: string;
  timer: NodeJS.Timeout;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export interface RpcClientOptions {
  /** Command connection (RPUSH, LREM); the client duplicates it for its reply subscription. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** With several shards (shards.ts): the keys of the shard serving `agent`, where its requests go. */
  keysOf?: (agent: string) => Keys | undefined;
}

/**
 * Sends requests to agents and routes their replies back. One per process; safe to share between
 * all runs of a worker. `close()` must be called at shutdown.
 */
export class RpcClient {
  readonly id = randomBytes(8).toString('hex');
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly keysOf: ((agent: string) => Keys | undefined) | undefined;
  private readonly log: Logger;
  private readonly pending = new Map<string, Pending>();
  private readonly replyChannel: string;
  private subscriber: Redis | undefined;
  private subscribing: Promise<void> | undefined;
  private isClosed = false;
  private sequence = 0;

  constructor({ redis, keys, log, keysOf }: RpcClientOptions) {
    this.redis = redis;
    this.keys = keys;
    this.keysOf = keysOf;
    this.log = log.child({ component: 'rpc-client' });
    this.replyChannel = rpcReplyChannel(keys, this.id);
  }

  /** Requests not yet answered, rejected or timed out. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Asks `agent`'s `onRequest` for an answer. Exactly one worker hosting the agent answers.
   * Rejects with RemoteRequestError (the responder threw: its message), RequestTimeoutError,
   * RequestPayloadError (payload not JSON or over 1 MiB: nothing sent), InvalidInputError (bad
   * agent name or timeout) or RequestShutdownError (this client closed).
   */
  async request<T = unknown>(agent: string, payload?: unknown, options: RequestOptions = {}): Promise<T> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    if (typeof agent !== 'string' || !AGENT_NAME.test(agent)) {
      throw new InvalidInputError(`request: agent must be an agent name like "lead-scoring", got ${JSON.stringify(agent)}`);
    }
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > MAX_TIMER_MS) {
      throw new InvalidInputError(`request: timeoutMs must be a positive number of milliseconds up to ${MAX_TIMER_MS}, got ${timeoutMs}`);
    }
    const payloadJson = serialise(payload ?? null, `payload of the request to agent ${agent}`);
    if (this.isClosed) throw new RequestShutdownError(agent);

    const id = `${this.id}.${(this.sequence++).toString(36)}`;
    const head: Omit<Envelope, 'payload'> = { id, from: options.from ?? 'external', agent, replyTo: this.replyChannel, timeoutMs };
    // The payload is spliced in as already-serialised JSON, so a large one is stringified once.
    const envelope = `${JSON.stringify(head).slice(0, -1)},"payload":${payloadJson}}`;
    const key = rpcRequestsKey(this.keysOf?.(agent) ?? this.keys, agent);

    // The clock starts before any Redis call, so a Redis outage ends in a timeout, not a hang.
    const answer = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        // Sent on the same connection after the push, so it runs after it even if the push is still queued.
        this.withdraw(key, envelope);
        reject(new RequestTimeoutError(agent, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { agent, key, envelope, timer, resolve: resolve as (v: unknown) => void, reject });
    });
    answer.catch(() => undefined); // it may settle (timeout, shutdown) before the caller awaits it
    try {
      await this.ensureSubscribed();
      if (!this.pending.has(id)) return answer; // timed out or shut down meanwhile: send nothing
      await this.redis.eval(PUSH_REQUEST_LUA, 1, key, envelope, String(timeoutMs + LIST_TTL_SLACK_MS));
    } catch (err) {
      this.settle(id)?.reject(err as Error);
    }
    return answer;
  }

  /** Rejects every pending request with RequestShutdownError and ends the reply subscription. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    const abandoned = [...this.pending.keys()].map((id) => this.settle(id)!);
    for (const p of abandoned) p.reject(new RequestShutdownError(p.agent));
    if (abandoned.length > 0) {
      // Best effort: take them off the lists so no responder answers a caller that is gone. One
      // command each, not a pipeline: with shards the lists may be in several cluster slots.
      await Promise.all(abandoned.map((p) => this.redis.lrem(p.key, 1, p.envelope).catch(() => undefined)));
    }
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (subscriber) await subscriber.quit().catch(() => subscriber.disconnect());
  }

  private ensureSubscribed(): Promise<void> {
    if (this.subscribing) return this.subscribing;
    const subscriber = duplicateRedisConnection(this.redis, 'rpc-replies');
    this.subscriber = subscriber;
    subscriber.on('error', () => {}); // the command connection logs outages
    subscriber.on('message', (_channel: string, message: string) => this.onReply(message));
    this.subscribing = subscriber.subscribe(this.replyChannel).then(() => undefined);
    this.subscribing.catch(() => (this.subscribing = undefined));
    return this.subscribing;
  }

  private onReply(message: string): void {
    let reply: Reply;
    try {
      reply = JSON.parse(message) as Reply;
    } catch {
      this.log.warn('dropped a reply that is not JSON');
      return;
    }
    const pending = this.settle(reply.id);
    if (!pending) return; // timed out or closed meanwhile
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new RemoteRequestError(pending.agent, reply.error, reply.name));
  }

  private settle(id: string): Pending | undefined {
    const pending = this.pending.get(id);
    if (!pending) return undefined;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    return pending;
  }

  private withdraw(key: string, envelope: string): void {
    this.redis.lrem(key, 1, envelope).catch((err: unknown) => this.log.debug({ err }, 'could not withdraw a timed-out request'));
  }
}

/**
 * One request from outside any agent (API, CLI, scripts): opens a client, asks, closes it.
 * Processes that ask often should keep one RpcClient instead.
 */
export async function request<T = unknown>(deps: { redis: Redis; keys: Keys; log: Logger }, agent: string, payload?: unknown, options: RequestOptions = {}): Promise<T> {
  const client = new RpcClient(deps);
  try {
    return await client.request<T>(agent, payload, { from: 'external', ...options });
  } finally {
    await client.close();
  }
}

export interface RpcResponderOptions {
  /** Command connection, for replies; the responder duplicates it for its blocking BLPOP. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** The agents this process hosts; those with `onRequest` are served. */
  agents: AgentSpec[];
  workerId: string;
  /** Requests handled at once by this process. Default 32. */
  concurrency?: number;
}

export interface RpcResponder {
  /** Names of the agents served (those with `onRequest`). */
  readonly agents: string[];
  /** Requests being handled now. */
  readonly inFlight: number;
  /** Stops taking requests, waits for those taken to be answered, closes the blocking connection. */
  close(): Promise<void>;
}

/**
 * Serves `request()`s for every hosted agent that defines `onRequest`. Returns at once (no agent
 * with `onRequest`: a responder that does nothing); the pop loop runs until `close()`.
 */
export function startRpcResponder(options: RpcResponderOptions): RpcResponder {
  const { redis, keys, workerId } = options;
  const log = options.log.child({ component: 'rpc-responder', workerId });
  const concurrency = options.concurrency ?? 32;
  const served = options.agents.filter((spec) => typeof spec.definition.onRequest === 'function');
  const byKey = new Map(served.map((spec) => [rpcRequestsKey(keys, spec.name), spec]));
  const inFlight = new Set<Promise<void>>();
  const running = new Set<AbortController>();
  let isClosing = false;

  if (served.length === 0) {
    return { agents: [], inFlight: 0, close: async () => {} };
  }

  // A unique client name lets close() find this connection's id after any reconnect.
  const blockingName = `werkpilot-rpc-${randomBytes(6).toString('hex')}`;
  const blocking = duplicateRedisConnection(redis, 'rpc-blocking', { connectionName: blockingName });
  blocking.on('error', () => {}); // the command connection logs outages

  const handle = async (key: string, raw: string) => {
    const spec = byKey.get(key)!;
    let envelope: Envelope;
    try {
      envelope = JSON.parse(raw) as Envelope;
    } catch {
      log.warn({ agent: spec.name }, 'dropped a request that is not JSON');
      return;
    }
    // Envelopes from before durations were sent (a rolling upgrade) get the default.
    const remainingMs = typeof envelope.timeoutMs === 'number' && envelope.timeoutMs > 0 ? Math.min(envelope.timeoutMs, MAX_TIMER_MS) : DEFAULT_REQUEST_TIMEOUT_MS;
    const requestLog = log.child({ agent: spec.name, requestId: envelope.id, from: envelope.from });
    // Aborted when the caller gives up or this process closes; plain timer and set, so nothing lingers.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new RequestTimeoutError(spec.name, remainingMs)), remainingMs);
    running.add(controller);
    let reply: string;
    try {
      const scope = { agent: spec.name, runId: envelope.id, activity: 'request' as const };
      const result = await runInScope(scope, () => spec.definition.onRequest!(envelope.payload, { signal: controller.signal, log: requestLog, agent: spec.name }));
      const resultJson = serialise(result ?? null, `result of agent ${spec.name}'s onRequest`);
      reply = `${JSON.stringify({ id: envelope.id, ok: true }).slice(0, -1)},"result":${resultJson}}`;
    } catch (thrown) {
      const err = thrown instanceof Error ? thrown : new Error(String(thrown));
      requestLog.debug({ err }, 'onRequest failed');
      reply = JSON.stringify({ id: envelope.id, ok: false, error: truncateBytes(String(err.message), MAX_ERROR_MESSAGE_BYTES), name: truncateBytes(String(err.name), 200) });
    } finally {
      clearTimeout(timer);
      running.delete(controller);
    }
    await redis.publish(envelope.replyTo, reply);
  };

  const track = (work: Promise<void>) => {
    const tracked = work.catch((err: unknown) => log.warn({ err }, 'could not answer a request')).finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  };

  const loop = (async () => {
    const listKeys = [...byKey.keys()];
    while (!isClosing) {
      if (inFlight.size >= concurrency) {
        await Promise.race(inFlight);
        continue;
      }
      let popped: [string, string] | null;
      try {
        popped = await blocking.blpop(...listKeys, 0);
      } catch (err) {
        if (isClosing) break;
        log.warn({ err }, 'request pop failed; retrying');
        await delay(500);
        continue;
      }
      if (popped) track(handle(popped[0], popped[1]));
    }
  })();

  log.info({ agents: served.map((s) => s.name) }, 'answering requests');
  return {
    agents: served.map((s) => s.name),
    get inFlight() {
      return inFlight.size;
    },
    close: async () => {
      if (isClosing) return;
      isClosing = true;
      await unblock(redis, blockingName).catch(() => blocking.disconnect());
      await Promise.race([loop, delay(2000)]);
      // Popped requests get their answer; one that outlasts the grace is aborted.
      await Promise.race([Promise.allSettled(inFlight), delay(DEFAULT_REQUEST_TIMEOUT_MS)]);
      for (const controller of running) controller.abort(new Error('responder closed'));
      await blocking.quit().catch(() => blocking.disconnect());
    },
  };
}

/** Ends the BLPOP of the connection named `name` (it returns nil), found by name since ids change on reconnect. */
async function unblock(redis: Redis, name: string): Promise<void> {
  // On a cluster, CLIENT goes to any node: ask each master, the one serving the tag's slot holds it.
  const servers = isClusterConnection(redis) ? (redis as unknown as Cluster).nodes('master') : [redis];
  for (const server of servers) {
    const list = (await server.client('LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(` name=${name} `));
    const id = line?.match(/^id=(\d+)/)?.[1];
    if (id) {
      await server.client('UNBLOCK', id);
      return;
    }
  }
}

/** A timer that does not keep the process alive. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** JSON of `value`, or RequestPayloadError when it has none or is over MAX_REQUEST_BYTES. */
function serialise(value: unknown, what: string): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new RequestPayloadError(`${what} is not JSON-serialisable: ${(err as Error).message}`);
  }
  if (json === undefined) throw new RequestPayloadError(`${what} is not JSON-serialisable (a ${typeof value})`);
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_REQUEST_BYTES) {
    throw new RequestPayloadError(`${what} is ${bytes} bytes; the limit is ${MAX_REQUEST_BYTES} (1 MiB)`);
  }
  return json;
}
