import type { AgentState } from '../self-healing/agent-state.js';
import type { ControlsFigures } from '../operator/controls-view.js';
import type { DeadLetterEntry } from '../queues/dlq.js';
import type { ProcessMemory } from '../process/process-memory.js';

/** Job counts of one queue by state, as BullMQ's getJobCounts reports them. */
export type QueueCounts = Record<'waiting' | 'prioritized' | 'delayed' | 'active' | 'completed' | 'failed', number>;

export interface AgentSnapshot extends AgentState {
  priority: number;
  dependencyDepth: number;
  dependsOn: string[];
  schedule: { cron: string; tz?: string } | null;
  timeoutMs: number;
}

/**
 * The JSON snapshot of `/api/metrics` (and `/metrics` for JSON clients): the predecessor's shape.
 * cluster-snapshot.ts builds it.
 */
export interface MetricsSnapshot {
  /** The release the answering scheduler runs (version.ts): the one `werkpilot --version` prints. */
  version: string;
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
  /** Every agent's fleet controls (configured and live) and the shared limiters (controls-view.ts). */
  controls?: ControlsFigures;
}
