import type { AgentState, AgentStateStore } from './agent-state.js';
import { DeadLetterQueue, type DeadLetterEntry } from './dlq.js';
import { readProcessMemory, type ProcessMemory } from './process-memory.js';
import type { Queues } from './queues.js';
import type { Registry } from './registry.js';

const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;
export type QueueCounts = Record<(typeof JOB_STATES)[number], number>;

export interface AgentSnapshot extends AgentState {
  priority: number;
  dependencyDepth: number;
  dependsOn: string[];
  schedule: { cron: string; tz?: string } | null;
  timeoutMs: number;
}

/** The JSON snapshot of `/api/metrics` (and `/metrics` for JSON clients): the predecessor's shape. */
export interface MetricsSnapshot {
  /** Runs waiting to execute (waiting + prioritized) on the agents queue. */
  executionQueueSize: number;
  deadLetterQueueSize: number;
  queues: { agents: QueueCounts; system: QueueCounts };
  system: {
    memory: ProcessMemory;
    uptimeSeconds: number;
    [extra: string]: unknown;
  };
  agents: Record<string, AgentSnapshot & Record<string, unknown>>;
  /** The last 20 dead-lettered runs, newest first. */
  deadLetterQueue: DeadLetterEntry[];
}

export interface SnapshotDeps {
  queues: Queues;
  registry: Registry;
  state: AgentStateStore;
  /** Adds fields from parts that exist in this process (workers, leader, health, ...). */
  extend?: ((snapshot: MetricsSnapshot) => Promise<void>)[];
}

export async function buildMetricsSnapshot({ queues, registry, state, extend = [] }: SnapshotDeps): Promise<MetricsSnapshot> {
  const dlq = new DeadLetterQueue(queues.agents);
  const names = registry.names();
  const [agentCounts, systemCounts, states, recentFailures] = await Promise.all([
    queues.agents.getJobCounts(...JOB_STATES) as Promise<QueueCounts>,
    queues.system.getJobCounts(...JOB_STATES) as Promise<QueueCounts>,
    state.getMany(names),
    dlq.list(0, 20),
  ]);
  const agents: MetricsSnapshot['agents'] = {};
  for (const spec of registry.list()) {
    agents[spec.name] = {
      priority: spec.priority,
      dependencyDepth: spec.depth,
      dependsOn: spec.dependsOn,
      schedule: spec.schedule ?? null,
      timeoutMs: spec.timeoutMs,
      ...states.get(spec.name)!,
    };
  }
  const snapshot: MetricsSnapshot = {
    executionQueueSize: agentCounts.waiting + agentCounts.prioritized,
    deadLetterQueueSize: agentCounts.failed,
    queues: { agents: agentCounts, system: systemCounts },
    system: { memory: readProcessMemory(), uptimeSeconds: Math.round(process.uptime()) },
    agents,
    deadLetterQueue: recentFailures,
  };
  for (const add of extend) await add(snapshot);
  return snapshot;
}
