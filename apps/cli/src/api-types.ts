/**
 * The shapes the CLI reads from the HTTP API (docs/design.md#http-surface). Fields other parts
 * add over time (health, circuit, score, workers, leader) are optional: the CLI shows "-" for what
 * a server does not report.
 */
export type QueueCounts = Partial<Record<'waiting' | 'prioritized' | 'delayed' | 'active' | 'completed' | 'failed', number>>;

/** One agent's figures as the snapshot (`agents.<name>`) carries them. */
export interface AgentFields {
  priority?: number;
  dependencyDepth?: number;
  dependsOn?: string[];
  schedule?: { cron: string; tz?: string } | null;
  timeoutMs?: number;
  runs?: number;
  successes?: number;
  failures?: number;
  skipped?: number;
  p50?: number | null;
  p95?: number | null;
  p99?: number | null;
  score?: number | null;
  health?: string;
  healthReasons?: string[];
  circuit?: string | { state?: string } | null;
  enabled?: boolean;
  lastRunAt?: string | null;
  lastOutcome?: string | null;
  lastError?: string | null;
  /** The agent's boot state (boot.ts); null before the first boot. */
  boot?: BootView | null;
  /** Its fleet controls as configured and as they stand (controls-view.ts). */
  controls?: ControlsView;
}

export interface ControlsView {
  overlap?: string;
  concurrency?: { limit: number; keyed: boolean } | null;
  rateLimit?: { max: number; perMs: number; keyed: boolean } | null;
  limiters?: { name: string; cost: number; max: number | null; perMs: number | null }[];
  catchUp?: string | { windowMs: number } | null;
  schedulePaused?: boolean;
  running?: number;
  waiting?: number;
  waitingForTokens?: number;
  rateLimited?: number;
}

export interface BootView {
  status: string;
  layer?: number;
  reason?: string;
  at?: string;
  failedChecks?: number;
  nextCheckAt?: string;
  /** The last on-demand boot request this state answers. */
  requestSeq?: number;
}

/** One agent as `GET /api/agents` lists it. */
export interface AgentView extends AgentFields {
  /** The shard the agent is placed in (WERKPILOT_SHARDS); 0 with one. */
  shard?: number;
  name: string;
}

export interface WorkerView {
  id: string;
  host?: string;
  pid?: number;
  concurrency?: number;
  active?: number;
  heapPercent?: number;
  rssMB?: number;
  lastSeenAt?: string;
}

export interface DeadLetterEntry {
  id: string;
  agent: string;
  error: string;
  stacktrace?: string[];
  data?: unknown;
  trigger?: string;
  pipelineId?: string;
  attemptsMade?: number;
  queuedAt?: string | null;
  startedAt?: string | null;
  failedAt?: string | null;
  workerId?: string | null;
}

export interface MetricsSnapshot {
  executionQueueSize: number;
  deadLetterQueueSize: number;
  queues?: { agents?: QueueCounts; system?: QueueCounts };
  system: {
    memory?: { heapPercent?: number; rssMB?: number };
    uptimeSeconds?: number;
    workers?: WorkerView[];
    scheduler?: { isLeader?: boolean; leaderId?: string | null; replicaId?: string };
  };
  agents: Record<string, AgentFields>;
  deadLetterQueue: DeadLetterEntry[];
}

export interface RunView {
  id: string;
  agent: string;
  state: string;
  trigger?: string | null;
  pipelineId?: string | null;
  attempts?: { made: number; started: number; max: number };
  timings?: { queuedAt: string | null; startedAt: string | null; finishedAt: string | null; durationMs: number | null };
  result?: unknown;
  error?: string | null;
  workerId?: string | null;
}

export interface BusEvent {
  type: string;
  agent?: string;
  at: string;
  data?: unknown;
}

/** The circuit state whatever shape the server reports it in. */
export function circuitStateOf(circuit: AgentView['circuit']): string | undefined {
  if (!circuit) return undefined;
  return typeof circuit === 'string' ? circuit : circuit.state;
}

/** `GET /api/shards`. */
export interface ShardsView {
  count: number;
  served: number;
  shards: { index: number; prefix: string; slot: number; agents: string[]; components: string[][]; expectedRunsPerHour: number }[];
}
