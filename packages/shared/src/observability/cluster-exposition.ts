import type { AgentSpec } from '../agents/agent.js';
import type { CircuitState } from '../self-healing/circuit-breaker.js';
import type { HealthState } from '../self-healing/health-rating.js';
import { RUN_DURATION_BUCKETS_SECONDS } from '../self-healing/agent-state.js';
import { WERKPILOT_VERSION } from '../process/version.js';

/**
 * The scheduler's cluster-wide Prometheus exposition, written as text from the snapshot's figures.
 * Every sample of a metric family must sit together under its `# HELP`/`# TYPE`, so each agent
 * contributes one fragment per family; the snapshot keeps the fragments of agents that did not
 * change and only writes those that did (prom-client would format every series on every scrape).
 */

/** The per-agent families, in exposition order. */
export const AGENT_FAMILIES = [
  { name: 'werkpilot_agent_runs_total', type: 'counter', help: 'Agent runs by outcome (attempts; timeout and cancelled are not counted as failure), cluster-wide' },
  { name: 'werkpilot_agent_retries_total', type: 'counter', help: 'Attempts after the first (automatic restarts), cluster-wide' },
  {
    name: 'werkpilot_agent_run_duration_seconds',
    type: 'histogram',
    help: 'Duration of executed agent attempts per agent, cluster-wide (only with METRICS_AGENT_HISTOGRAMS=true)',
  },
  { name: 'werkpilot_agent_priority', type: 'gauge', help: 'Agent priority (1 critical, 2 important, 3 normal)' },
  { name: 'werkpilot_agent_dependency_depth', type: 'gauge', help: 'Agent dependency depth (its boot layer)' },
  { name: 'werkpilot_agent_consecutive_failures', type: 'gauge', help: 'Failed attempts since the last success' },
  { name: 'werkpilot_agent_circuit_state', type: 'gauge', help: 'Circuit breaker state, one series per state; 1 marks the current one' },
  { name: 'werkpilot_agent_health_state', type: 'gauge', help: 'Agent health, one series per state; 1 marks the current one' },
  { name: 'werkpilot_agent_score', type: 'gauge', help: 'Performance score 0-100 (absent until the agent has run)' },
  { name: 'werkpilot_agent_enabled', type: 'gauge', help: 'Whether the agent is enabled (1) or disabled by an operator (0)' },
] as const;

/** Index of the per-agent histogram family in AGENT_FAMILIES (left out with METRICS_AGENT_HISTOGRAMS=false). */
export const AGENT_HISTOGRAM_FAMILY = 2;
const CIRCUIT_STATES: CircuitState[] = ['closed', 'half-open', 'open'];
const HEALTH_STATES: (HealthState | 'unknown')[] = ['healthy', 'degraded', 'unhealthy', 'unknown'];
const PRIORITIES = [1, 2, 3] as const;
/** `le` label values, formatted once. */
const BUCKET_LABELS = [...RUN_DURATION_BUCKETS_SECONDS.map(String), '+Inf'];

/** What one agent's series are made of. */
export interface AgentExpositionInput {
  spec: Pick<AgentSpec, 'name' | 'priority' | 'depth'>;
  /**
   * The stats hash (agent-state.ts: counters and exported figures) and the frozen run-metrics hash
   * of earlier versions (prometheus-metrics.ts runMetricsKey), as HGETALL returns them.
   */
  stats: Record<string, string>;
  legacyRunMetrics: Record<string, string>;
  circuit: CircuitState;
  health: HealthState | null;
  score: number | null;
  enabled: boolean;
}

/** One string per family of AGENT_FAMILIES ('' for a family the agent has no sample in). */
export function agentExposition(input: AgentExpositionInput, withHistogram: boolean): string[] {
  const agent = `agent="${escapeLabelValue(input.spec.name)}"`;
  const int = (h: Record<string, string>, f: string) => Number(h[f] ?? 0);
  const { stats, legacyRunMetrics: legacy } = input;
  const both = (f: string) => int(stats, f) + int(legacy, f);
  const timeouts = both('timeout');
  const runs = 'werkpilot_agent_runs_total{';
  // Timeouts are counted in `failures` too; earlier versions counted cancellations there as well.
  const out: string[] = [
    `${runs}${agent},outcome="success"} ${int(stats, 'successes')}\n` +
      `${runs}${agent},outcome="failure"} ${Math.max(0, int(stats, 'failures') - timeouts - int(legacy, 'cancelled'))}\n` +
      `${runs}${agent},outcome="skipped"} ${int(stats, 'skipped')}\n` +
      `${runs}${agent},outcome="timeout"} ${timeouts}\n` +
      `${runs}${agent},outcome="cancelled"} ${both('cancelled')}\n`,
    `werkpilot_agent_retries_total{${agent}} ${both('retries')}\n`,
    withHistogram ? histogramLines('werkpilot_agent_run_duration_seconds', agent, bucketCounts(stats, legacy), both('sumMs') / 1000) : '',
    `werkpilot_agent_priority{${agent}} ${input.spec.priority}\n`,
    `werkpilot_agent_dependency_depth{${agent}} ${input.spec.depth}\n`,
    `werkpilot_agent_consecutive_failures{${agent}} ${int(stats, 'consecutiveFailures')}\n`,
    CIRCUIT_STATES.map((s) => `werkpilot_agent_circuit_state{${agent},state="${s}"} ${s === input.circuit ? 1 : 0}\n`).join(''),
    HEALTH_STATES.map((s) => `werkpilot_agent_health_state{${agent},state="${s}"} ${s === (input.health ?? 'unknown') ? 1 : 0}\n`).join(''),
    input.score === null ? '' : `werkpilot_agent_score{${agent}} ${input.score}\n`,
    `werkpilot_agent_enabled{${agent}} ${input.enabled ? 1 : 0}\n`,
  ];
  return out;
}

/** Per-bucket (not cumulative) duration counts of the stats and legacy hashes together; the last is the +Inf overflow. */
export function bucketCounts(stats: Record<string, string>, legacy: Record<string, string>): number[] {
  return BUCKET_LABELS.map((_, i) => Number(stats[`b${i}`] ?? 0) + Number(legacy[`b${i}`] ?? 0));
}

/** Duration buckets and sum of every agent of each priority: the histograms that are always exported. */
export class PriorityHistograms {
  private readonly counts = new Map<number, number[]>(PRIORITIES.map((p) => [p, BUCKET_LABELS.map(() => 0)]));
  private readonly sums = new Map<number, number>(PRIORITIES.map((p) => [p, 0]));

  /** Adds (sign 1) or takes back (sign -1) one agent's per-bucket counts and duration sum. */
  add(priority: number, counts: readonly number[], sumMs: number, sign: 1 | -1): void {
    const totals = this.counts.get(priority);
    if (!totals) return;
    for (let i = 0; i < totals.length; i += 1) totals[i]! += sign * (counts[i] ?? 0);
    this.sums.set(priority, this.sums.get(priority)! + sign * sumMs);
  }

  lines(): string {
    return PRIORITIES.map((p) => histogramLines('werkpilot_priority_run_duration_seconds', `priority="${p}"`, this.counts.get(p)!, this.sums.get(p)! / 1000)).join('');
  }
}

/** Cluster figures that are not per agent. */
export interface ClusterExpositionInput {
  queues: { queue: string; state: string; value: number }[];
  prioritized: { queue: string; priority: number; value: number }[];
  deadLetterQueueSize: number;
  liveWorkers: number;
  /** Whether this replica holds the leader lease; undefined when this process takes no part in elections. */
  isLeader: boolean | undefined;
  byPriority: PriorityHistograms;
}

/** `# HELP` and `# TYPE` of each per-agent family, in AGENT_FAMILIES order. */
export const AGENT_FAMILY_HEADERS = AGENT_FAMILIES.map((f) => header(f.name, f.type, f.help));

/** The families that are not per agent, after the per-agent ones. */
export function clusterFamilies(cluster: ClusterExpositionInput): string {
  let text = header('werkpilot_priority_run_duration_seconds', 'histogram', 'Duration of executed agent attempts by agent priority (1 critical, 3 normal), cluster-wide');
  text += cluster.byPriority.lines();
  text += header('werkpilot_queue_jobs', 'gauge', 'Jobs per queue and state');
  text += cluster.queues.map((f) => `werkpilot_queue_jobs{queue="${f.queue}",state="${f.state}"} ${f.value}\n`).join('');
  text += header('werkpilot_queue_prioritized_jobs', 'gauge', 'Jobs waiting per queue and priority (1 critical, 3 normal)');
  text += cluster.prioritized.map((f) => `werkpilot_queue_prioritized_jobs{queue="${f.queue}",priority="${f.priority}"} ${f.value}\n`).join('');
  text += header('werkpilot_dead_letter_queue_size', 'gauge', 'Runs in the dead-letter queue (failed set of the agents queue)');
  text += `werkpilot_dead_letter_queue_size ${cluster.deadLetterQueueSize}\n`;
  text += header('werkpilot_live_workers', 'gauge', 'Workers with a live heartbeat');
  text += `werkpilot_live_workers ${cluster.liveWorkers}\n`;
  if (cluster.isLeader !== undefined) {
    text += header('werkpilot_scheduler_is_leader', 'gauge', 'Whether this scheduler replica holds the leader lease');
    text += `werkpilot_scheduler_is_leader ${cluster.isLeader ? 1 : 0}\n`;
  }
  text += header('werkpilot_build_info', 'gauge', 'Always 1; the version label is the release this scheduler runs (werkpilot --version)');
  text += `werkpilot_build_info{version="${escapeLabelValue(WERKPILOT_VERSION)}"} 1\n`;
  return text;
}

function header(name: string, type: string, help: string): string {
  return `\n# HELP ${name} ${help}\n# TYPE ${name} ${type}\n`;
}

function histogramLines(name: string, labels: string, counts: readonly number[], sumSeconds: number): string {
  let cumulative = 0;
  let text = '';
  for (let i = 0; i < BUCKET_LABELS.length; i += 1) {
    cumulative += counts[i] ?? 0;
    text += `${name}_bucket{${labels},le="${BUCKET_LABELS[i]}"} ${cumulative}\n`;
  }
  return `${text}${name}_sum{${labels}} ${sumSeconds}\n${name}_count{${labels}} ${cumulative}\n`;
}

/** The exposition format's label-value escaping: backslash, double quote and newline. */
export function escapeLabelValue(value: string): string {
  return /[\\"\n]/.test(value) ? value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : value;
}
