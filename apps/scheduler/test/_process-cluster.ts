import { afterEach } from 'vitest';
import { EventBus, createKeys, createLogger, createQueues, freePort, type BusEvent, type Keys, type Queues } from '@werkpilot/shared';
import { startApp, stopApps, uniquePrefix, waitFor, type AppProcess, type TestRedis } from '@werkpilot/test-support';

/**
 * Real scheduler and worker processes on one prefix, for end-to-end proofs of what a single test
 * process cannot show (not a test file: the leading `_`). The test decides the order: a worker
 * online before the scheduler plans (cron lateness), or runs queued through the API before any
 * worker starts (priority order).
 */
export interface ProcessCluster {
  prefix: string;
  keys: Keys;
  /** The test's own view of the queues (reads; runs go through the API). */
  queues: Queues;
  /** Every bus event since the cluster was created, in order. */
  events: BusEvent[];
  /** The scheduler's base URL, once started. */
  url: string;
  /** Starts the scheduler on a free port; resolves once it answers /readyz. */
  startScheduler(env?: Record<string, string>): Promise<AppProcess>;
  /** Starts `count` workers; resolves with their worker ids once each is online. */
  startWorkers(count: number, env?: Record<string, string>): Promise<string[]>;
  /** Calls the scheduler's API with the operator token. */
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** Queues a run through `POST /api/agents/:agent/run`; resolves with its run id. */
  run(agent: string, body?: Record<string, unknown>): Promise<string>;
  /** Publishes a marker and waits for it: every event published before is then in `events`. */
  flushEvents(): Promise<void>;
}

const TOKEN = 'process-cluster-token';
const log = createLogger({ level: 'silent', name: 'test' });

const stops: (() => Promise<void>)[] = [];
/** Stops every process a test started (SIGTERM; each must exit 0) and closes the test's connections. */
afterEach(async () => {
  while (stops.length > 0) await stops.pop()!();
}, 60_000);

export async function processCluster(redis: TestRedis, agentsDir: string, env: Record<string, string> = {}): Promise<ProcessCluster> {
  const prefix = uniquePrefix();
  const keys = createKeys(prefix);
  const connection = redis.client();
  const queues = createQueues({ connection, keys });
  const bus = new EventBus({ redis: connection, keys, log });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  const apps: AppProcess[] = [];
  stops.push(async () => {
    await bus.close();
    await queues.close();
  });
  stops.push(() => stopApps(apps.splice(0)));
  const common = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, DASHBOARD_TOKEN: TOKEN, LOG_LEVEL: 'warn', ...env };

  const cluster: ProcessCluster = {
    prefix,
    keys,
    queues,
    events,
    url: '',
    async startScheduler(extra = {}) {
      const port = await freePort();
      const scheduler = startApp('scheduler', { ...common, PORT: String(port), ...extra });
      apps.push(scheduler);
      cluster.url = `http://127.0.0.1:${port}`;
      await waitFor(async () => (await fetch(`${cluster.url}/readyz`).catch(() => undefined))?.ok, {
        timeoutMs: 40_000,
        what: () => `the scheduler ready; output:\n${scheduler.output().slice(-2000)}`,
      });
      return scheduler;
    },
    async startWorkers(count, extra = {}) {
      const started = Array.from({ length: count }, () => startApp('worker', { ...common, LOG_LEVEL: 'info', ...extra }));
      apps.push(...started);
      await Promise.all(started.map((w) => w.waitForLog(/worker online/, 40_000)));
      return started.map((w) => String(w.logs().find((l) => l.msg === 'worker online')!.workerId));
    },
    async api<T>(method: string, path: string, body?: unknown) {
      const res = await fetch(`${cluster.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: res.status, body: (await res.json()) as T };
    },
    async run(agent, body = {}) {
      const queued = await cluster.api<{ runId: string }>('POST', `/api/agents/${agent}/run`, body);
      if (queued.status !== 202) throw new Error(`POST /api/agents/${agent}/run answered ${queued.status} ${JSON.stringify(queued.body)}`);
      return queued.body.runId;
    },
    async flushEvents() {
      const marker = `marker:${Math.random()}`;
      await bus.publish(marker);
      await waitFor(() => events.some((e) => e.type === marker), { what: 'the marker event' });
    },
  };
  return cluster;
}

/**
 * Agent source helpers: agents in worker processes report to the test through files in $E2E_DIR —
 * `note` appends a line to its log, `mark` creates a file — and `until` waits for a file that the
 * test or another agent creates (or for the run's abort).
 */
export const FILE_SIGNALS = `import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
const note = (line) => appendFileSync(process.env.E2E_DIR + '/log', line + '\\n');
const mark = (file) => writeFileSync(process.env.E2E_DIR + '/' + file, '');
const until = (file, signal) => new Promise((resolve, reject) => {
  const timer = setInterval(() => { if (existsSync(process.env.E2E_DIR + '/' + file)) { clearInterval(timer); resolve(); } }, 10);
  signal.addEventListener('abort', () => { clearInterval(timer); reject(signal.reason); }, { once: true });
});
`;
