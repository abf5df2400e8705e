import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import {
  AgentStateStore,
  CircuitBreaker,
  EventBus,
  ReportStore,
  buildRegistry,
  cancelRun,
  createAgentWorker,
  createKeys,
  createLogger,
  createQueues,
  createSnapshotService,
  defineAgent,
  disableAgent,
  enableAgent,
  startRunCancelListener,
  type AgentDefinition,
  type Keys,
  type Logger,
  type Queues,
  type Redis,
  type Registry,
  type SnapshotService,
} from '@werkpilot/shared';
import { uniquePrefix, type TestRedis } from '@werkpilot/test-support';
import { createHttpApp } from '../src/http/app.js';
import type { DashboardCredentials } from '../src/http/auth.js';

type Worker = ReturnType<typeof createAgentWorker>;

export const log = createLogger({ level: 'silent', name: 'http-test' });

/**
 * The test agents: a small DAG (alpha → beta → gamma) plus agents that time out, fail once, or
 * always fail. `beta` fails when its data says so (with its `message`, if given), so the DLQ can be filled on demand.
 */
export const TEST_AGENTS: AgentDefinition[] = [
  defineAgent({ name: 'alpha', priority: 1, run: async () => ({ ok: true }) }),
  defineAgent({
    name: 'beta',
    priority: 2,
    dependsOn: ['alpha'],
    retry: { attempts: 1 },
    run: async (ctx) => {
      const data = ctx.data as { fail?: boolean; message?: string } | undefined;
      if (data?.fail) throw new Error(data.message ?? 'beta was told to fail');
      return { ok: true };
    },
  }),
  defineAgent({ name: 'gamma', dependsOn: ['beta'], run: async () => null }),
  defineAgent({
    name: 'sleepy',
    timeoutMs: 50,
    retry: { attempts: 1 },
    run: (ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
  }),
  defineAgent({
    name: 'flaky',
    retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 10 } },
    run: async (ctx) => {
      if (ctx.attempt === 1) throw new Error('first attempt fails');
      return { attempt: ctx.attempt };
    },
  }),
  defineAgent({
    name: 'waiter',
    timeoutMs: 30_000,
    retry: { attempts: 3 },
    run: (ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
  }),
  defineAgent({ name: 'doomed', retry: { attempts: 1 }, run: async () => Promise.reject(new Error('doomed to fail: upstream 503')) }),
];

export interface Harness {
  url: string;
  keys: Keys;
  queues: Queues;
  registry: Registry;
  redis: Redis;
  state: AgentStateStore;
  reports: ReportStore;
  /** Starts a real agent worker on this prefix (stopped by `close`). */
  startWorker(): Promise<Worker>;
  /** A second scheduler replica's app on the same prefix (another port), for cluster-wide checks. */
  replica(): Promise<string>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  credentials?: DashboardCredentials;
  isReady?: () => Promise<boolean>;
  /** The app's logger (default: silent). */
  log?: Logger;
  /** METRICS_SNAPSHOT_MAX_AGE_MS of each replica (default 0: every read reflects every write before it). */
  snapshotMaxAgeMs?: number;
  /** METRICS_AGENT_HISTOGRAMS (default true). */
  agentHistograms?: boolean;
  /** Agents the snapshot re-reads per build unmarked (default: the builder's); 0 leaves only the change feed. */
  sweepPerBuild?: number;
}

/**
 * The scheduler's HTTP app in this process, on a free port, wired as main.ts wires it (real
 * back-ends for toggle, circuit reset, reports and cancel) on a real Redis with a fresh prefix.
 */
export async function startHttpHarness(testRedis: TestRedis, options: HarnessOptions = {}): Promise<Harness> {
  const keys = createKeys(uniquePrefix());
  const redis = testRedis.client();
  const registry = buildRegistry(TEST_AGENTS.map((definition) => ({ definition, source: `${definition.name}.ts` })));
  const queues = createQueues({ connection: redis, keys });
  const bus = new EventBus({ redis, keys, log });
  const state = new AgentStateStore({ redis, keys });
  const circuit = new CircuitBreaker({ redis, keys, log });
  const reports = new ReportStore({ redis, keys });
  const retention = { dlqRetain: 100, completedRetain: 1000 };
  const servers: Server[] = [];
  const workers: Worker[] = [];
  const buses: EventBus[] = [bus];
  const listeners: { close(): Promise<void> }[] = [];
  const snapshotServices: SnapshotService[] = [];

  const listen = async (): Promise<string> => {
    const snapshots = createSnapshotService({
      redis,
      keys,
      registry,
      queues,
      agentHistograms: options.agentHistograms ?? true,
      maxAgeMs: options.snapshotMaxAgeMs ?? 0,
      ...(options.sweepPerBuild !== undefined ? { sweepPerBuild: options.sweepPerBuild } : {}),
      log,
    });
    snapshotServices.push(snapshots);
    const app = createHttpApp({
      queues,
      registry,
      snapshots,
      log: options.log ?? log,
      isReady: options.isReady ?? (async () => (await redis.ping()) === 'PONG'),
      redis,
      keys,
      bus,
      retention,
      credentials: options.credentials ?? {},
      toggle: { enable: (agent) => enableAgent({ redis, keys }, agent), disable: (agent) => disableAgent({ redis, keys }, agent) },
      resetCircuit: async (agent) => {
        await circuit.reset(agent);
        return (await circuit.get(agent)).state;
      },
      reports: { latest: () => reports.getLatest(), list: () => reports.list() },
      cancel: (runId, reason) => cancelRun({ queue: queues.agents, redis, keys, bus, ackTimeoutMs: 2000 }, runId, reason),
    });
    const server: Server = await new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  const url = await listen();
  return {
    url,
    keys,
    queues,
    registry,
    redis,
    state,
    reports,
    replica: listen,
    async startWorker() {
      const workerBus = new EventBus({ redis, keys, log });
      buses.push(workerBus);
      const worker = createAgentWorker({
        connection: redis,
        redis,
        keys,
        registry,
        bus: workerBus,
        log,
        workerId: `test-worker-${workers.length}`,
        concurrency: 4,
      });
      workers.push(worker);
      await worker.waitUntilReady();
      listeners.push(await startRunCancelListener({ redis, keys, log, worker, workerId: worker.name }));
      return worker;
    },
    async close() {
      await Promise.all(listeners.map((l) => l.close()));
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(
        servers.map(
          (s) =>
            new Promise((resolve) => {
              s.close(resolve);
              s.closeAllConnections();
            }),
        ),
      );
      await Promise.all(snapshotServices.map((s) => s.close()));
      await Promise.all(buses.map((b) => b.close()));
      await queues.close();
    },
  };
}

/** `fetch` against the harness with optional credentials, returning status, headers and parsed body. */
export async function call(
  url: string,
  path: string,
  { method = 'GET', body, headers = {}, rawBody }: { method?: string; body?: unknown; headers?: Record<string, string>; rawBody?: string } = {},
): Promise<{ status: number; headers: Headers; body: any; text: string }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (rawBody !== undefined) {
    init.body = rawBody;
    (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)['content-type'] = 'application/json';
  }
  const res = await fetch(`${url}${path}`, init);
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

export const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
