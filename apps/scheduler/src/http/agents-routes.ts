import { Router, type Request } from 'express';
import {
  InvalidInputError,
  agentNameParam,
  backfillBody,
  bodyOf,
  describeControls,
  listRunIds,
  parseInput,
  readRunSummaries,
  runBody,
  type AgentSpec,
  type MetricsSnapshot,
  type Queues,
  type Registry,
  type RunSummary,
  type TraceParent,
  type TriggerOptions,
  type TriggeredRun,
  type BackfillResult,
  type AgentRollups,
  type Shards,
} from '@werkpilot/shared';
import { jsonBody } from './json-body.js';

/** What `POST /api/agents/:name/run` needs: queue a run, or a pipeline with `withDependents`, idempotently with a key. */
export type TriggerAgent = (agent: string, options: TriggerOptions) => Promise<TriggeredRun>;

export interface AgentsRoutesDeps {
  registry: Registry;
  queues: Queues;
  /** The JSON snapshot: agent state plus what other parts add (health, circuit, score, enabled). */
  snapshot: () => Promise<MetricsSnapshot>;
  trigger: TriggerAgent;
  /** Agent enable/disable flag (agent-toggle.ts); the routes are absent without it. */
  toggle?: { enable(agent: string): Promise<unknown>; disable(agent: string): Promise<unknown> };
  /** Manual circuit reset (circuit-breaker.ts); the route is absent without it. */
  resetCircuit?: (agent: string) => Promise<unknown>;
  /** Asks the leader to boot-check the agent again (boot-healer.ts); resolves to the request's number. */
  boot?: (agent: string) => Promise<number>;
  /** Pause and resume of an agent's schedule (schedule-pause.ts); the routes are absent without it. */
  schedules?: { pause(agent: string): Promise<unknown>; resume(agent: string): Promise<unknown> };
  /** Queues the ticks of a time range (tick-runs.ts backfill); the route is absent without it. */
  backfill?: (agent: string, from: number, to: number, data?: unknown) => Promise<BackfillResult>;
  /** The agent's per-minute rollups as charts (run-rollups.ts); the route is absent without it. */
  rollups?: (agent: string) => Promise<AgentRollups>;
  /** The fleet's shards (shards.ts): each agent's shard and their count; one when not given. */
  shards?: Pick<Shards, 'count' | 'of'>;
}

/** How many of an agent's recent runs the detail view shows. */
const LAST_RUNS = 10;

/**
 * `GET /api/agents`, `GET /api/agents/:name` (registry + state + whatever health, circuit, score
 * and enabled figures the snapshot carries, plus the last runs), and the operator actions on one
 * agent: run, enable, disable, circuit reset, boot check.
 */
export function agentsRoutes(deps: AgentsRoutesDeps): Router {
  const router = Router();
  const shardOf = (agent: string) => deps.shards?.of(agent)?.index;
  const shardCount = deps.shards?.count ?? 1;
  const requireAgent = (raw: string): AgentSpec => {
    return deps.registry.require(parseInput(agentNameParam, raw, 'agent'));
  };

  router.get('/api/agents', async (_req, res) => {
    const snapshot = await deps.snapshot();
    res.json({ agents: deps.registry.list().map((spec) => describe(spec, snapshot, shardOf)), layers: deps.registry.layers, shards: shardCount });
  });

  router.get('/api/agents/:name', async (req, res) => {
    const spec = requireAgent(req.params.name);
    const [snapshot, lastRuns] = await Promise.all([deps.snapshot(), recentRuns(deps.queues, spec.name)]);
    res.json({ ...describe(spec, snapshot, shardOf), shards: shardCount, dependents: deps.registry.dependentsOf(spec.name), lastRuns });
  });

  const rollups = deps.rollups;
  if (rollups) {
    router.get('/api/agents/:name/rollups', async (req, res) => {
      const spec = requireAgent(req.params.name);
      res.json({ agent: spec.name, ...(await rollups(spec.name)) });
    });
  }

  router.post('/api/agents/:name/run', jsonBody(), async (req: Request<{ name: string }>, res) => {
    const spec = requireAgent(req.params.name);
    const body = parseInput(runBody, bodyOf(req.body), 'body');
    const header = req.get('idempotency-key');
    if (header !== undefined && body.idempotencyKey !== undefined && header !== body.idempotencyKey) {
      throw new InvalidInputError("the Idempotency-Key header and the body's idempotencyKey differ; send one of them");
    }
    const idempotencyKey = header ?? body.idempotencyKey;
    const traceParent = traceParentOf(req);
    const queued = await deps.trigger(spec.name, {
      ...(body.data !== undefined ? { data: body.data } : {}),
      ...(body.withDependents ? { withDependents: true } : {}),
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      ...(traceParent ? { traceParent } : {}),
    });
    // A replay answers as the first request did (Stripe's convention), and says that it is one.
    if (queued.replayed) res.set('Idempotent-Replayed', 'true');
    res.status(202).json(queued);
  });

  const schedules = deps.schedules;
  if (schedules) {
    router.post('/api/agents/:name/schedule/pause', async (req, res) => {
      const spec = requireAgent(req.params.name);
      await schedules.pause(spec.name);
      res.json({ agent: spec.name, schedulePaused: true });
    });
    router.post('/api/agents/:name/schedule/resume', async (req, res) => {
      const spec = requireAgent(req.params.name);
      await schedules.resume(spec.name);
      res.json({ agent: spec.name, schedulePaused: false });
    });
  }
  const backfill = deps.backfill;
  if (backfill) {
    router.post('/api/agents/:name/backfill', jsonBody(), async (req: Request<{ name: string }>, res) => {
      const spec = requireAgent(req.params.name);
      const body = parseInput(backfillBody, bodyOf(req.body), 'body');
      res.status(202).json(await backfill(spec.name, body.from, body.to, body.data));
    });
  }

  const toggle = deps.toggle;
  if (toggle) {
    router.post('/api/agents/:name/enable', async (req, res) => {
      const spec = requireAgent(req.params.name);
      await toggle.enable(spec.name);
      res.json({ agent: spec.name, enabled: true });
    });
    router.post('/api/agents/:name/disable', async (req, res) => {
      const spec = requireAgent(req.params.name);
      await toggle.disable(spec.name);
      res.json({ agent: spec.name, enabled: false });
    });
  }

  const resetCircuit = deps.resetCircuit;
  if (resetCircuit) {
    router.post('/api/agents/:name/circuit/reset', async (req, res) => {
      const spec = requireAgent(req.params.name);
      const circuit = await resetCircuit(spec.name);
      res.json({ agent: spec.name, circuit });
    });
  }
  const boot = deps.boot;
  if (boot) {
    // 202: the leader (whichever replica) checks within about a second; the agent's `boot` shows
    // the outcome with `requestSeq` at least the number answered here.
    router.post('/api/agents/:name/boot', async (req, res) => {
      const spec = requireAgent(req.params.name);
      const requestSeq = await boot(spec.name);
      res.status(202).json({ agent: spec.name, requestSeq });
    });
  }
  return router;
}

function describe(spec: AgentSpec, snapshot: MetricsSnapshot, shardOf: (agent: string) => number | undefined) {
  return {
    name: spec.name,
    shard: shardOf(spec.name) ?? 0,
    schedule: spec.schedule ?? null,
    dependsOn: spec.dependsOn,
    timeoutMs: spec.timeoutMs,
    retry: spec.retry,
    overlap: spec.overlap,
    maxRestartsPerHour: spec.maxRestartsPerHour,
    ...snapshot.agents[spec.name],
    controls: snapshot.controls?.agents[spec.name] ?? describeControls(spec),
  };
}

/**
 * The agent's most recent runs still held by BullMQ (active, and what retention keeps of completed
 * and failed), newest first, with large fields cut (run-summaries.ts). BullMQ has no per-name index, so
 * this scans the newest job ids of each state and reads only their names, then the summaries of
 * the matches (run-summaries.ts): an agent that runs rarely among busy ones may show fewer than
 * LAST_RUNS.
 */
async function recentRuns(queues: Queues, agent: string): Promise<RunSummary[]> {
  const ranges = [
    { state: 'active', from: 0, to: 49 },
    { state: 'completed', from: 0, to: 299 },
    { state: 'failed', from: 0, to: 99 },
  ] as const;
  // Each state's ids come newest first, so its first LAST_RUNS matches are all it can contribute.
  const perState = await Promise.all(ranges.map(async (range) => readRunSummaries(queues.agents, await listRunIds(queues.agents, [range]), { agent, max: LAST_RUNS })));
  const summaries = perState.flat();
  const at = (r: RunSummary) => Date.parse(r.timings.finishedAt ?? r.timings.startedAt ?? r.timings.queuedAt ?? '') || 0;
  return summaries.sort((a, b) => at(b) - at(a)).slice(0, LAST_RUNS);
}

/**
 * The caller's W3C trace context, so that with tracing on the runs join the caller's trace (a CI
 * job's, a service's). A malformed header is ignored, as the W3C propagator ignores it.
 */
function traceParentOf(req: Request<{ name: string }>): TraceParent | undefined {
  const { traceparent, tracestate } = req.headers;
  if (typeof traceparent !== 'string' || traceparent === '') return undefined;
  return typeof tracestate === 'string' && tracestate !== '' ? { traceparent, tracestate } : { traceparent };
}
