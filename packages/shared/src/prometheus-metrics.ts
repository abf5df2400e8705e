import type { ChainableCommander, Redis, Result } from 'ioredis';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OutcomeListener } from './agent-executor.js';
import { RUN_DURATION_BUCKETS_SECONDS, type RunRecord } from './agent-state.js';
import type { Keys } from './keys.js';
import type { Queues } from './queues.js';
import { execOrThrow } from './redis-pipeline.js';
import type { Registry as AgentRegistry } from './registry.js';

/**
 * Prometheus exposition for the scheduler (cluster-wide figures read from Redis at scrape time)
 * and the worker (its own, process-local figures). Each process builds ONE prom-client Registry
 * of its own; nothing is registered on prom-client's global default registry, so two apps in one
 * process (tests) never collide.
 */


/** The outcome label of `werkpilot_agent_runs_total`; the values are mutually exclusive. */
export const EXPORTED_OUTCOMES = ['success', 'failure', 'skipped', 'timeout', 'cancelled'] as const;
export type ExportedOutcome = (typeof EXPORTED_OUTCOMES)[number];

/** Media types a Prometheus scraper asks for; anything else gets the JSON snapshot. */
const PROMETHEUS_MEDIA_TYPES = ['text/plain', 'application/openmetrics-text'];

/**
 * Whether a `/metrics` request wants the Prometheus text format: `?format=prometheus`, or an
 * `Accept` header naming text/plain or application/openmetrics-text (Prometheus always sends
 * one). Plain `curl` (`*\/*`), browsers and `application/json` get the JSON snapshot.
 */
export function wantsPrometheusFormat(accept: string | undefined, format: unknown): boolean {
  if (format === 'prometheus') return true;
  if (format === 'json') return false;
  if (!accept) return false;
  return accept
    .toLowerCase()
    .split(',')
    .some((part) => {
      const [type = '', ...params] = part.split(';').map((s) => s.trim());
      const q = params.find((p) => p.startsWith('q='));
      return PROMETHEUS_MEDIA_TYPES.includes(type) && (q === undefined || Number(q.slice(2)) > 0);
    });
}

/** How a run record counts in `werkpilot_agent_runs_total`. */
export function exportedOutcomeOf(record: RunRecord): ExportedOutcome {
  if (record.timedOut) return 'timeout';
  return record.outcome;
}

/**
 * The hash where versions before the one-script run path kept each agent's exported figures
 * (duration buckets, sum, retries, timeout and cancelled counts; both of the latter were also
 * counted in `failures`). Those figures now live in the agent's stats hash (agent-state.ts); the
 * scrape adds this frozen hash to them so the counters carry on across the upgrade.
 */
export function runMetricsKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'run-metrics');
}

/**
 * Queues Redis reads on the scrape's single pipeline: `read(queue, use)` queues one command and
 * hands its reply to `use` once the pipeline has run. Other parts (circuit breaker, health,
 * workers, leader) plug in as ScrapeSources without adding a round trip.
 */
export type ScrapeReader = (queue: (pipeline: ChainableCommander) => void, use: (reply: unknown) => void) => void;

/** Adds figures to a scrape: queue reads with `read`, and set gauges in their `use` callbacks. */
export type ScrapeSource = (read: ScrapeReader, gauges: ClusterGauges, agents: readonly string[]) => void;

/** Gauges that figures from other parts of the system fill in during a scrape. */
export interface ClusterGauges {
  /** One-hot: `{agent, state}` = 1 for the current state (closed, half-open, open). */
  circuitState: Gauge<'agent' | 'state'>;
  /** One-hot: `{agent, state}` = 1 for the current state (healthy, degraded, unhealthy, unknown). */
  healthState: Gauge<'agent' | 'state'>;
  score: Gauge<'agent'>;
  enabled: Gauge<'agent'>;
  liveWorkers: Gauge;
  /** Whether this scheduler replica holds the leader lease. */
  isLeader: Gauge;
}

export interface SchedulerMetricsOptions {
  redis: Redis;
  keys: Keys;
  registry: AgentRegistry;
  queues: Queues;
  sources?: ScrapeSource[];
}

/** The scheduler's exporter: `render()` reads the cluster in one pipeline and returns the text. */
export interface SchedulerMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  render(): Promise<string>;
}

const QUEUE_STATES = ['wait', 'prioritized', 'delayed', 'active', 'paused', 'waiting-children', 'completed', 'failed'] as const;
const PRIORITIES = [1, 2, 3] as const;
/** BullMQ keeps prioritized jobs in a sorted set scored `priority × 2^32 + counter`. */
const PRIORITY_SCORE_SPAN = 0x100000000;

export function createSchedulerMetrics({ redis, keys, registry: agents, queues, sources = [] }: SchedulerMetricsOptions): SchedulerMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry);
  const runs = new Counter({
    name: 'werkpilot_agent_runs_total',
    help: 'Agent runs by outcome (attempts; timeout and cancelled are not counted as failure), cluster-wide',
    labelNames: ['agent', 'outcome'] as const,
    registers: [registry],
  });
  const retries = new Counter({
    name: 'werkpilot_agent_retries_total',
    help: 'Attempts after the first (automatic restarts), cluster-wide',
    labelNames: ['agent'] as const,
    registers: [registry],
  });
  const durations = new ClusterHistogram(
    'werkpilot_agent_run_duration_seconds',
    'Duration of executed agent attempts, cluster-wide',
    RUN_DURATION_BUCKETS_SECONDS,
  );
  registry.registerMetric(durations as unknown as Histogram<'agent'>);
  const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
    new Gauge<L>({ name, help, labelNames, registers: [registry] });
  const queueJobs = gauge('werkpilot_queue_jobs', 'Jobs per queue and state', ['queue', 'state']);
  const queuePriority = gauge('werkpilot_queue_prioritized_jobs', 'Jobs waiting per queue and priority (1 critical, 3 normal)', ['queue', 'priority']);
  const dlqSize = gauge('werkpilot_dead_letter_queue_size', 'Runs in the dead-letter queue (failed set of the agents queue)', []);
  const priority = gauge('werkpilot_agent_priority', 'Agent priority (1 critical, 2 important, 3 normal)', ['agent']);
  const depth = gauge('werkpilot_agent_dependency_depth', 'Agent dependency depth (its boot layer)', ['agent']);
  const consecutiveFailures = gauge('werkpilot_agent_consecutive_failures', 'Failed attempts since the last success', ['agent']);
  const cluster: ClusterGauges = {
    circuitState: gauge('werkpilot_agent_circuit_state', 'Circuit breaker state, one series per state; 1 marks the current one', ['agent', 'state']),
    healthState: gauge('werkpilot_agent_health_state', 'Agent health, one series per state; 1 marks the current one', ['agent', 'state']),
    score: gauge('werkpilot_agent_score', 'Performance score 0-100 (absent until the agent has run)', ['agent']),
    enabled: gauge('werkpilot_agent_enabled', 'Whether the agent is enabled (1) or disabled by an operator (0)', ['agent']),
    liveWorkers: gauge('werkpilot_live_workers', 'Workers with a live heartbeat', []),
    isLeader: gauge('werkpilot_scheduler_is_leader', 'Whether this scheduler replica holds the leader lease', []),
  };
  const resettable = [queueJobs, queuePriority, dlqSize, priority, depth, consecutiveFailures, ...Object.values(cluster)];

  const render = async () => {
    const names = agents.names();
    const pipeline = redis.pipeline();
    const consumers: ((reply: unknown) => void)[] = [];
    const read: ScrapeReader = (queue, use) => {
      queue(pipeline);
      consumers.push(use);
    };
    const stats = new Map<string, Record<string, string>>();
    const exported = new Map<string, Record<string, string>>();
    for (const name of names) {
      read((p) => p.hgetall(keys.agentStats(name)), (r) => stats.set(name, r as Record<string, string>));
      read((p) => p.hgetall(runMetricsKey(keys, name)), (r) => exported.set(name, r as Record<string, string>));
    }
    const queueFigures: { queue: string; state: string; value: number }[] = [];
    const priorityFigures: { queue: string; priority: number; value: number }[] = [];
    for (const queue of [queues.agents, queues.system]) {
      for (const state of QUEUE_STATES) {
        const key = queue.keys[state]!;
        const isList = state === 'wait' || state === 'active' || state === 'paused';
        read((p) => (isList ? p.llen(key) : p.zcard(key)), (r) => queueFigures.push({ queue: queue.name, state, value: Number(r) }));
      }
      for (const level of PRIORITIES) {
        read(
          (p) => p.zcount(queue.keys.prioritized!, level * PRIORITY_SCORE_SPAN, (level + 1) * PRIORITY_SCORE_SPAN - 1),
          (r) => priorityFigures.push({ queue: queue.name, priority: level, value: Number(r) }),
        );
      }
    }
    for (const source of sources) source(read, cluster, names);
    const replies = await execOrThrow(pipeline);

    // Everything is reset and set again synchronously from here on, so a concurrent scrape never
    // reads a half-filled registry, and agents that left the registry drop out.
    for (const r of resettable) r.reset();
    runs.reset();
    retries.reset();
    durations.reset();
    replies.forEach((reply, i) => consumers[i]!(reply));
    for (const spec of agents.list()) {
      const s = stats.get(spec.name) ?? {};
      const e = exported.get(spec.name) ?? {};
      const int = (h: Record<string, string>, f: string) => Number(h[f] ?? 0);
      // Stats hash (today's figures) plus the legacy run-metrics hash (see runMetricsKey).
      const both = (f: string) => int(s, f) + int(e, f);
      const timeouts = both('timeout');
      const labels = { agent: spec.name };
      runs.inc({ ...labels, outcome: 'success' }, int(s, 'successes'));
      runs.inc({ ...labels, outcome: 'failure' }, Math.max(0, int(s, 'failures') - timeouts - int(e, 'cancelled')));
      runs.inc({ ...labels, outcome: 'skipped' }, int(s, 'skipped'));
      runs.inc({ ...labels, outcome: 'timeout' }, timeouts);
      runs.inc({ ...labels, outcome: 'cancelled' }, both('cancelled'));
      retries.inc(labels, both('retries'));
      durations.set(
        labels,
        Array.from({ length: RUN_DURATION_BUCKETS_SECONDS.length + 1 }, (_, i) => both(`b${i}`)),
        both('sumMs') / 1000,
      );
      priority.set(labels, spec.priority);
      depth.set(labels, spec.depth);
      consecutiveFailures.set(labels, int(s, 'consecutiveFailures'));
    }
    for (const f of queueFigures) queueJobs.set({ queue: f.queue, state: f.state }, f.value);
    for (const f of priorityFigures) queuePriority.set({ queue: f.queue, priority: String(f.priority) }, f.value);
    dlqSize.set(queueFigures.find((f) => f.queue === queues.agents.name && f.state === 'failed')?.value ?? 0);
    return registry.metrics();
  };
  return { registry, contentType: registry.contentType, render };
}

/**
 * A histogram whose bucket counts are set from Redis at scrape time instead of observed in this
 * process: prom-client's Histogram can only `observe()`, so this object speaks prom-client's
 * metric interface (`get()` returning the `_bucket`/`_sum`/`_count` series) for the registry to
 * format like any other.
 */
class ClusterHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private series = new Map<string, { labels: Record<string, string>; counts: number[]; sumSeconds: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
  ) {}

  /** `counts` are per bucket, not cumulative; the last entry is the +Inf overflow. */
  set(labels: Record<string, string>, counts: number[], sumSeconds: number): void {
    this.series.set(JSON.stringify(labels), { labels, counts, sumSeconds });
  }

  reset(): void {
    this.series.clear();
  }

  async get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const { labels, counts, sumSeconds } of this.series.values()) {
      let cumulative = 0;
      this.upperBounds.forEach((le, i) => {
        cumulative += counts[i] ?? 0;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le }, value: cumulative });
      });
      const total = cumulative + (counts[this.upperBounds.length] ?? 0);
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: total });
      values.push({ metricName: `${this.name}_sum`, labels, value: sumSeconds });
      values.push({ metricName: `${this.name}_count`, labels, value: total });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/**
 * prom-client's Node process metrics (CPU, memory, heap spaces, event-loop lag, GC, handles).
 * Three of them are gauges named `*_total`, which `promtool check metrics` rejects; the same
 * figures remain, by type, in `nodejs_active_handles`/`nodejs_active_requests`/`nodejs_active_resources`.
 */
function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
}

/** The worker's exporter: its own runs, observed as they finish in this process. */
export interface WorkerMetrics {
  readonly registry: Registry;
  readonly contentType: string;
  /** Give to the executor's `outcomeListeners`: it records in this process's memory only. */
  readonly outcomeListener: OutcomeListener;
  /** Counts an unhandled promise rejection of `agent`'s code (undefined: outside any agent). */
  countUnhandledRejection(agent: string | undefined): void;
  render(): Promise<string>;
}

/** The `agent` label of a fault that happened outside any agent's code (not a valid agent name). */
export const NO_AGENT_LABEL = '(none)';

export function createWorkerMetrics({ activeRuns }: { activeRuns?: () => number } = {}): WorkerMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry);
  const runs = new Counter({
    name: 'werkpilot_worker_runs_total',
    help: 'Agent runs this worker process finished, by outcome (the cluster-wide total is werkpilot_agent_runs_total on the scheduler)',
    labelNames: ['agent', 'outcome'] as const,
    registers: [registry],
  });
  const retries = new Counter({
    name: 'werkpilot_worker_retries_total',
    help: 'Attempts after the first that this worker process ran',
    labelNames: ['agent'] as const,
    registers: [registry],
  });
  const durations = new Histogram({
    name: 'werkpilot_worker_run_duration_seconds',
    help: 'Duration of agent attempts this worker process ran',
    labelNames: ['agent'] as const,
    buckets: [...RUN_DURATION_BUCKETS_SECONDS],
    registers: [registry],
  });
  if (activeRuns) {
    new Gauge({
      name: 'werkpilot_worker_active_runs',
      help: 'Agent runs executing in this worker process now',
      registers: [registry],
      collect() {
        this.set(activeRuns());
      },
    });
  }
  const unhandledRejections = new Counter({
    name: 'werkpilot_unhandled_rejections_total',
    help: `Promise rejections nobody awaited in this worker process, by the agent whose code left them (${NO_AGENT_LABEL}: outside any agent); the worker logs and survives each`,
    labelNames: ['agent'] as const,
    registers: [registry],
  });
  const outcomeListener: OutcomeListener = (record) => {
    runs.inc({ agent: record.agent, outcome: exportedOutcomeOf(record) });
    const isExecuted = record.outcome === 'success' || record.outcome === 'failure';
    if ((record.attempt ?? 1) > 1 && isExecuted) retries.inc({ agent: record.agent });
    if (record.durationMs !== undefined && isExecuted) durations.observe({ agent: record.agent }, record.durationMs / 1000);
  };
  return {
    registry,
    contentType: registry.contentType,
    outcomeListener,
    countUnhandledRejection: (agent) => unhandledRejections.inc({ agent: agent ?? NO_AGENT_LABEL }),
    render: () => registry.metrics(),
  };
}
