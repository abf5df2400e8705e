import { randomBytes } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { AgentFiguresReader, agentStateOf, type AgentFigures } from '../self-healing/agent-figures.js';
import type { AgentBootState } from '../self-healing/boot.js';
import {
  AGENT_FAMILIES,
  AGENT_FAMILY_HEADERS,
  AGENT_HISTOGRAM_FAMILY,
  agentExposition,
  bucketCounts,
  clusterFamilies,
  PriorityHistograms,
  type ClusterExpositionInput,
} from './cluster-exposition.js';
import { DeadLetterQueue, type DeadLetterEntry } from '../queues/dlq.js';
import { FragmentBlocks } from './fragment-blocks.js';
import type { AgentHealth, HealthState } from '../self-healing/health-rating.js';
import { listLiveWorkers } from '../process/heartbeat.js';
import { bootKey, disabledSet, healthKey, type Keys } from '../redis/keys.js';
import type { LeaderElection } from '../process/leader.js';
import type { AgentSnapshot, MetricsSnapshot, QueueCounts } from './metrics-snapshot.js';
import { bodySegment, prepareBody, type BodySegment, type PreparedBody } from './prepared-body.js';
import { readProcessMemory } from '../process/process-memory.js';
import type { Queues } from '../queues/queues.js';
import { execOrThrow } from '../redis/redis-pipeline.js';
import type { Registry } from '../agents/registry.js';
import { computeScore } from '../self-healing/score.js';
import { controlsExposition, readControlsNow, type ControlsFigures } from '../operator/controls-view.js';
import { readChangesSince, readGenerations } from './snapshot-changes.js';
import { anonymousDeadLetterEntry, anonymousWorker, truncateError } from './snapshot-redaction.js';
import { turnBudget } from './turn-budget.js';
import { WERKPILOT_VERSION } from '../process/version.js';

/**
 * The cluster snapshot behind `/api/metrics`, `/metrics` (JSON and Prometheus) and the agent views,
 * built incrementally: each build re-reads only the agents the change feed (snapshot-changes.ts)
 * names since the previous build, plus a small round-robin sweep, and re-renders only their JSON and
 * exposition fragments. What a build costs in Redis commands and CPU depends on how many agents
 * changed, not on how many exist. Every Redis call is bounded (one agent, one page) and the work
 * between awaits is split into chunks, so the scheduler's event loop keeps turning during a build.
 */

/** Who reads a JSON body: `anonymous` is an unauthenticated client while credentials are configured. */
export type SnapshotAccess = 'full' | 'anonymous';

/** One build: its figures as an object, and its bodies prepared on first demand. */
export interface ClusterSnapshot {
  /** Build number, per builder. */
  readonly id: number;
  /** When the build started reading (ms): it reflects every change made before this. */
  readonly startedAt: number;
  /** The complete JSON snapshot as an object. Shared by every request: never mutate it. */
  readonly view: MetricsSnapshot;
  json(access: SnapshotAccess): Promise<PreparedBody>;
  prometheus(): Promise<PreparedBody>;
}

export interface ClusterSnapshotOptions {
  redis: Redis;
  keys: Keys;
  registry: Registry;
  queues: Queues;
  /** This replica's election: adds `system.scheduler` and the is_leader gauge. */
  leader?: Pick<LeaderElection, 'id' | 'isLeader' | 'currentLeader'>;
  /** Per-agent duration histograms in the exposition (METRICS_AGENT_HISTOGRAMS). */
  agentHistograms: boolean;
  /** This process's own metrics in the exposition format (prom-client's default metrics). */
  processMetrics?: () => Promise<string>;
  /**
   * Agents re-read per build whether or not they were marked changed, in turn: it bounds how long a
   * change made without a mark (a worker of an older version, a hand edit in Redis) stays unseen.
   */
  sweepPerBuild?: number;
  /** The circuit breaker's rolling window (one hour). */
  restartWindowMs?: number;
  clock?: () => number;
}

const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;
const QUEUE_STATES = ['wait', 'prioritized', 'delayed', 'active', 'paused', 'waiting-children', 'completed', 'failed'] as const;
const PRIORITIES = [1, 2, 3] as const;
/** BullMQ keeps prioritized jobs in a sorted set scored `priority × 2^32 + counter`. */
const PRIORITY_SCORE_SPAN = 0x100000000;
const DLQ_SHOWN = 20;
/** Agents per pipeline: their first read returns up to 1000 samples each, later ones a few. */
const FIRST_READS_PER_CHUNK = 20;
const READS_PER_CHUNK = 200;
const HEALTH_READS_PER_CHUNK = 500;
const BOOT_SCAN_COUNT = 500;
const DEFAULT_SWEEP = 32;
/** Fragment kinds kept per agent: the exposition families, then the two JSON variants. */
const JSON_KIND = AGENT_FAMILIES.length;
const ANONYMOUS_JSON_KIND = JSON_KIND + 1;
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
const FAMILY_HEADER_SEGMENTS = AGENT_FAMILY_HEADERS.map(bodySegment);

/** What the snapshot keeps per agent between builds: its view and its rendered fragments. */
interface AgentEntry {
  view: AgentSnapshot & Record<string, unknown>;
  /**
   * By kind: one string per exposition family, then `"name":{...}` for the full JSON and for
   * anonymous clients (the same string when nothing differs), with a leading comma after the first agent.
   */
  fragments: string[];
  restartsLastHour: number;
}

export class ClusterSnapshotBuilder {
  private readonly options: ClusterSnapshotOptions;
  private readonly clock: () => number;
  private readonly figures: AgentFiguresReader;
  private readonly names: readonly string[];
  private readonly entries = new Map<string, AgentEntry>();
  /** Views by registry position, for the snapshot object. */
  private readonly views: (AgentEntry['view'] | undefined)[];
  /** Per-priority duration totals, kept by adding each re-read agent's change (not a sum over every agent per build). */
  private readonly byPriority = new PriorityHistograms();
  private readonly contributions = new Map<string, { counts: number[]; sumMs: number }>();
  /** Agents with restarts in the rolling window: their figures change with time alone. */
  private readonly withRestarts = new Set<string>();
  private readonly unrendered = new Set<string>();
  private readonly blocks: FragmentBlocks;
  private readonly firstAgent: string | undefined;
  private readonly position = new Map<string, number>();
  private readonly health = new Map<string, AgentHealth>();
  private boot = new Map<string, AgentBootState>();
  private disabled = new Set<string>();
  private generations: { health: number; boot: number } | undefined;
  private cursor = 0;
  private sweepAt = 0;
  private builds = 0;
  private readonly dlqCache = new Map<string, { score: string; entry: DeadLetterEntry }>();
  private readonly etagTag = randomBytes(4).toString('hex');
  private readonly dlq: DeadLetterQueue;

  constructor(options: ClusterSnapshotOptions) {
    this.options = options;
    this.clock = options.clock ?? Date.now;
    this.names = options.registry.names();
    this.views = this.names.map(() => undefined);
    for (const [i, name] of this.names.entries()) this.position.set(name, i);
    this.blocks = new FragmentBlocks(this.names, ANONYMOUS_JSON_KIND + 1);
    this.firstAgent = this.names[0];
    this.dlq = new DeadLetterQueue(options.queues.agents);
    this.figures = new AgentFiguresReader({ redis: options.redis, keys: options.keys, ...(options.restartWindowMs ? { restartWindowMs: options.restartWindowMs } : {}) });
  }

  /** Reads what changed since the last build and returns a new snapshot. Not re-entrant: one build at a time. */
  async build(): Promise<ClusterSnapshot> {
    const { redis, keys } = this.options;
    const startedAt = this.clock();
    const isFirst = this.generations === undefined;
    // The change feed first: whatever is marked after this read is picked up by the next build.
    const [changes, generations, disabledNow] = await Promise.all([readChangesSince(redis, keys, this.cursor), readGenerations(redis, keys), redis.smembers(disabledSet(keys))]);
    const cluster = this.readClusterFigures(startedAt);
    // The controls' figures move at admission too: read afresh each build (controls-view.ts).
    const controls = readControlsNow({ redis, keys, registry: this.options.registry, clock: () => startedAt });
    controls.catch(() => undefined);
    cluster.catch(() => undefined); // awaited below; do not let it reject unobserved meanwhile

    const names = this.names;
    // Agents read by a build that then failed are still to be rendered.
    const rerender = this.unrendered;
    const toRead = isFirst ? names : this.agentsToRead(changes.agents, names);
    await this.readAgents(toRead, startedAt);
    for (const agent of toRead) {
      rerender.add(agent);
      this.account(agent);
    }
    if (isFirst || generations.health !== this.generations!.health) {
      await this.readHealth(names);
      for (const agent of names) rerender.add(agent);
    }
    if (isFirst || generations.boot !== this.generations!.boot) {
      this.boot = await this.readBoot();
      for (const agent of names) rerender.add(agent);
    }
    const disabled = new Set(disabledNow);
    for (const agent of disabled) if (!this.disabled.has(agent)) rerender.add(agent);
    for (const agent of this.disabled) if (!disabled.has(agent)) rerender.add(agent);
    // Restarts leave the rolling window with time alone, without any write to mark.
    for (const agent of this.withRestarts) {
      const figures = this.figures.get(agent)!;
      if (this.figures.restartsAt(figures, startedAt) !== this.entries.get(agent)?.restartsLastHour) rerender.add(agent);
    }
    this.disabled = disabled;
    this.cursor = changes.cursor;
    this.generations = generations;

    await this.render(rerender, startedAt);
    rerender.clear();
    return this.assemble(await cluster, await controls, startedAt);
  }

  /** Keeps the per-priority duration totals and the set of agents with restarts in step with a re-read agent. */
  private account(agent: string): void {
    const figures = this.figures.get(agent);
    const spec = this.options.registry.get(agent);
    if (!figures || !spec) return;
    const previous = this.contributions.get(agent);
    if (previous) this.byPriority.add(spec.priority, previous.counts, previous.sumMs, -1);
    const next = {
      counts: bucketCounts(figures.stats, figures.legacyRunMetrics),
      sumMs: Number(figures.stats.sumMs ?? 0) + Number(figures.legacyRunMetrics.sumMs ?? 0),
    };
    this.byPriority.add(spec.priority, next.counts, next.sumMs, 1);
    this.contributions.set(agent, next);
    if (figures.restarts.length > 0) this.withRestarts.add(agent);
    else this.withRestarts.delete(agent);
  }

  /** The changed agents still in the registry, and the next few of the sweep. */
  private agentsToRead(changed: readonly string[], names: readonly string[]): string[] {
    const read = new Set(changed.filter((agent) => this.options.registry.get(agent)));
    const sweep = Math.min(names.length, this.options.sweepPerBuild ?? DEFAULT_SWEEP);
    for (let i = 0; i < sweep; i += 1) read.add(names[(this.sweepAt + i) % names.length]!);
    this.sweepAt = names.length === 0 ? 0 : (this.sweepAt + sweep) % names.length;
    return [...read];
  }

  private async readAgents(agents: readonly string[], now: number): Promise<void> {
    const firstReads = agents.filter((a) => !this.figures.has(a));
    const rereads = agents.filter((a) => this.figures.has(a));
    for (const [list, size] of [
      [firstReads, FIRST_READS_PER_CHUNK],
      [rereads, READS_PER_CHUNK],
    ] as const) {
      for (let i = 0; i < list.length; i += size) {
        await this.figures.refresh(list.slice(i, i + size), now);
        await nextTurn();
      }
    }
  }

  private async readHealth(agents: readonly string[]): Promise<void> {
    const { redis, keys } = this.options;
    for (let i = 0; i < agents.length; i += HEALTH_READS_PER_CHUNK) {
      const chunk = agents.slice(i, i + HEALTH_READS_PER_CHUNK);
      const pipeline = redis.pipeline();
      for (const agent of chunk) pipeline.hmget(healthKey(keys, agent), 'state', 'reasons', 'checkedAt');
      const replies = await execOrThrow(pipeline);
      chunk.forEach((agent, j) => {
        const [state, reasons, checkedAt] = replies[j] as (string | null)[];
        this.health.set(agent, {
          state: (state as HealthState | null) ?? null,
          reasons: reasons ? (JSON.parse(reasons) as string[]) : [],
          checkedAt: checkedAt ? new Date(Number(checkedAt)).toISOString() : null,
        });
      });
      await nextTurn();
    }
  }

  /** The boot hash, page by page (HSCAN), so no single call returns every agent's entry. */
  private async readBoot(): Promise<Map<string, AgentBootState>> {
    const { redis, keys } = this.options;
    const states = new Map<string, AgentBootState>();
    let cursor = '0';
    do {
      const [next, flat] = await redis.hscan(bootKey(keys), cursor, 'COUNT', BOOT_SCAN_COUNT);
      for (let i = 0; i < flat.length; i += 2) states.set(flat[i]!, JSON.parse(flat[i + 1]!) as AgentBootState);
      cursor = next;
    } while (cursor !== '0');
    return states;
  }

  private async render(agents: ReadonlySet<string>, now: number): Promise<void> {
    const turn = turnBudget();
    for (const agent of agents) {
      const spec = this.options.registry.get(agent);
      const figures = this.figures.get(agent);
      if (!spec || !figures) continue;
      const entry = this.renderAgent(spec, figures, now);
      this.entries.set(agent, entry);
      this.views[this.position.get(agent)!] = entry.view;
      await turn.yieldIfDue();
    }
    await this.blocks.update(
      agents,
      (agent) => this.entries.get(agent)?.fragments,
      (kind) => (kind === ANONYMOUS_JSON_KIND ? JSON_KIND : undefined),
    );
  }

  private renderAgent(spec: NonNullable<ReturnType<Registry['get']>>, figures: AgentFigures, now: number): AgentEntry {
    const state = agentStateOf(figures);
    const restartsLastHour = this.figures.restartsAt(figures, now);
    const health = this.health.get(spec.name) ?? { state: null, reasons: [], checkedAt: null };
    const isEnabled = !this.disabled.has(spec.name);
    const score = computeScore({
      runs: state.recentRuns,
      successRate: state.recentSuccessRate ?? 0,
      p95: figures.recentP95,
      timeoutMs: spec.timeoutMs,
      restartsLastHour,
      maxRestartsPerHour: spec.maxRestartsPerHour,
    });
    const view = {
      priority: spec.priority,
      dependencyDepth: spec.depth,
      dependsOn: spec.dependsOn,
      schedule: spec.schedule ?? null,
      timeoutMs: spec.timeoutMs,
      ...state,
      circuit: figures.circuit.state,
      restartsLastHour,
      circuitOpenedAt: figures.circuit.openedAt === null ? null : new Date(figures.circuit.openedAt).toISOString(),
      health: health.state,
      healthReasons: health.reasons,
      healthCheckedAt: health.checkedAt,
      score,
      boot: this.boot.get(spec.name) ?? null,
      enabled: isEnabled,
    };
    const key = `${spec.name === this.firstAgent ? '' : ','}${JSON.stringify(spec.name)}`;
    const json = `${key}:${JSON.stringify(view)}`;
    const anonymousJson =
      view.lastError !== null && truncateError(view.lastError) !== view.lastError ? `${key}:${JSON.stringify({ ...view, lastError: truncateError(view.lastError) })}` : json;
    const exposition = agentExposition(
      { spec, stats: figures.stats, legacyRunMetrics: figures.legacyRunMetrics, circuit: figures.circuit.state, health: health.state, score, enabled: isEnabled },
      this.options.agentHistograms,
    );
    return { view, fragments: [...exposition, json, anonymousJson], restartsLastHour };
  }

  /** Queue counts, workers, leader and the newest dead-lettered runs: a fixed number of calls. */
  private async readClusterFigures(now: number) {
    const { redis, queues, leader } = this.options;
    const pipeline = redis.pipeline();
    for (const queue of [queues.agents, queues.system]) {
      for (const state of QUEUE_STATES) {
        const key = queue.keys[state]!;
        if (state === 'wait' || state === 'active' || state === 'paused') pipeline.llen(key);
        else pipeline.zcard(key);
      }
      for (const level of PRIORITIES) pipeline.zcount(queue.keys.prioritized!, level * PRIORITY_SCORE_SPAN, (level + 1) * PRIORITY_SCORE_SPAN - 1);
    }
    pipeline.zrevrange(queues.agents.keys.failed!, 0, DLQ_SHOWN - 1, 'WITHSCORES');
    const [replies, agentCounts, systemCounts, agentsByPriority, workers, leaderId] = await Promise.all([
      execOrThrow(pipeline),
      queues.agents.getJobCounts(...JOB_STATES) as Promise<QueueCounts>,
      queues.system.getJobCounts(...JOB_STATES) as Promise<QueueCounts>,
      queues.agents.getCountsPerPriority([...PRIORITIES]),
      listLiveWorkers({ redis: this.options.redis, keys: this.options.keys, clock: () => now }),
      leader ? leader.currentLeader() : Promise.resolve(null),
    ]);
    const queueFigures: ClusterExpositionInput['queues'] = [];
    const prioritized: ClusterExpositionInput['prioritized'] = [];
    let at = 0;
    for (const queue of [queues.agents, queues.system]) {
      for (const state of QUEUE_STATES) queueFigures.push({ queue: queue.name, state, value: Number(replies[at++]) });
      for (const level of PRIORITIES) prioritized.push({ queue: queue.name, priority: level, value: Number(replies[at++]) });
    }
    const failed = replies[at] as string[];
    return {
      agentCounts,
      systemCounts,
      agentsByPriority,
      workers,
      leaderId,
      queueFigures,
      prioritized,
      deadLetterQueue: await this.deadLetterEntries(failed),
    };
  }

  /**
   * The newest failed runs as the DLQ's list shows them (inputs, errors and stacks cut at 2 KiB); a
   * run already read is reused while its failure time (the score) is unchanged.
   */
  private async deadLetterEntries(idsAndScores: string[]): Promise<DeadLetterEntry[]> {
    const wanted: { id: string; score: string }[] = [];
    for (let i = 0; i < idsAndScores.length; i += 2) wanted.push({ id: idsAndScores[i]!, score: idsAndScores[i + 1]! });
    const missing = wanted.filter((w) => this.dlqCache.get(w.id)?.score !== w.score);
    const scoreOf = new Map(missing.map((w) => [w.id, w.score]));
    for (const entry of await this.dlq.entries(missing.map((w) => w.id))) this.dlqCache.set(entry.id, { score: scoreOf.get(entry.id)!, entry });
    const shown = new Set(wanted.map((w) => w.id));
    for (const id of this.dlqCache.keys()) if (!shown.has(id)) this.dlqCache.delete(id);
    return wanted.flatMap((w) => (this.dlqCache.get(w.id)?.score === w.score ? [this.dlqCache.get(w.id)!.entry] : []));
  }

  private assemble(cluster: Awaited<ReturnType<ClusterSnapshotBuilder['readClusterFigures']>>, controls: ControlsFigures, startedAt: number): ClusterSnapshot {
    const { leader } = this.options;
    const id = ++this.builds;
    const names = this.names;
    const views = this.views.slice();
    const isLeader = leader ? cluster.leaderId === leader.id && leader.isLeader : undefined;
    const system: MetricsSnapshot['system'] = {
      memory: readProcessMemory(),
      uptimeSeconds: Math.round(process.uptime()),
      workers: cluster.workers,
      ...(leader ? { scheduler: { isLeader, leaderId: cluster.leaderId, replicaId: leader.id } } : {}),
    };
    const queues = { agents: cluster.agentCounts, system: cluster.systemCounts, agentsByPriority: cluster.agentsByPriority };
    let agents: MetricsSnapshot['agents'] | undefined;
    const view: MetricsSnapshot = {
      version: WERKPILOT_VERSION,
      executionQueueSize: cluster.agentCounts.waiting + cluster.agentCounts.prioritized,
      deadLetterQueueSize: cluster.agentCounts.failed,
      queues: queues as MetricsSnapshot['queues'],
      system,
      // Made on first use: the bodies are written from fragments, only the agent routes read this.
      get agents() {
        if (!agents) {
          agents = {};
          for (let i = 0; i < names.length; i += 1) if (views[i]) agents[names[i]!] = views[i]!;
        }
        return agents;
      },
      deadLetterQueue: cluster.deadLetterQueue,
      controls,
    };

    const etag = (variant: string) => `W/"${this.etagTag}-${id}-${variant}"`;
    // The blocks as they are now: later builds replace blocks, never change these.
    const agentSegments = Array.from({ length: ANONYMOUS_JSON_KIND + 1 }, (_, kind) => [...this.blocks.segments(kind)]);
    const controlsJson = JSON.stringify(controls);
    const json = async (access: SnapshotAccess) => {
      const isAnonymous = access === 'anonymous';
      const head = {
        version: view.version,
        executionQueueSize: view.executionQueueSize,
        deadLetterQueueSize: view.deadLetterQueueSize,
        queues,
        system: isAnonymous ? anonymousSystem(system) : system,
      };
      const dlq = isAnonymous ? cluster.deadLetterQueue.map(anonymousDeadLetterEntry) : cluster.deadLetterQueue;
      const segments = [
        bodySegment(`${JSON.stringify(head).slice(0, -1)},"agents":{`),
        ...agentSegments[isAnonymous ? ANONYMOUS_JSON_KIND : JSON_KIND]!,
        bodySegment(`},"controls":${controlsJson},"deadLetterQueue":${JSON.stringify(dlq)}${isAnonymous ? ',"redacted":true' : ''}}`),
      ];
      return prepareBody(segments, { contentType: JSON_CONTENT_TYPE, etag: etag(access) });
    };
    // Written now: the totals move on with the next build.
    const clusterText = clusterFamilies({
      queues: cluster.queueFigures,
      prioritized: cluster.prioritized,
      deadLetterQueueSize: cluster.queueFigures.find((f) => f.queue === this.options.queues.agents.name && f.state === 'failed')?.value ?? 0,
      liveWorkers: cluster.workers.length,
      isLeader,
      byPriority: this.byPriority,
    });
    const controlsText = controlsExposition(controls);
    const prometheus = async () => {
      const processMetrics = this.options.processMetrics ? await this.options.processMetrics() : '';
      const segments: BodySegment[] = [bodySegment(processMetrics.endsWith('\n') ? processMetrics : `${processMetrics}\n`)];
      AGENT_FAMILIES.forEach((_, family) => {
        if (family === AGENT_HISTOGRAM_FAMILY && !this.options.agentHistograms) return;
        segments.push(FAMILY_HEADER_SEGMENTS[family]!, ...agentSegments[family]!);
      });
      segments.push(bodySegment(clusterText + controlsText));
      return prepareBody(segments, { contentType: PROMETHEUS_CONTENT_TYPE, etag: etag('prometheus') });
    };
    return { id, startedAt, view, json: memoiseBy(json), prometheus: memoise(prometheus) };
  }
}

function anonymousSystem(system: MetricsSnapshot['system']): MetricsSnapshot['system'] {
  const { workers, scheduler, ...rest } = system as MetricsSnapshot['system'] & { workers: Parameters<typeof anonymousWorker>[0][]; scheduler?: { isLeader?: boolean } };
  return { ...rest, workers: workers.map(anonymousWorker), ...(scheduler ? { scheduler: { isLeader: scheduler.isLeader } } : {}) };
}

function memoise<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
}

function memoiseBy<K, T>(make: (key: K) => Promise<T>): (key: K) => Promise<T> {
  const made = new Map<K, Promise<T>>();
  return (key) => {
    let value = made.get(key);
    if (!value) {
      value = make(key);
      made.set(key, value);
    }
    return value;
  };
}
