import { Router, type Request } from 'express';
import { InvalidInputError, bodyOf, cancelBody, lookupRun, parseInput, requireRunState, resolveInstant, runIdParam, runSearchQuery, searchRuns, type Queues } from '@werkpilot/shared';
import { jsonBody } from './json-body.js';

export interface RunsRoutesDeps {
  queues: Queues;
  /** Run cancellation (run-cancel.ts); the route is absent without it. */
  cancel?: (runId: string, reason?: string) => Promise<unknown>;
  /** The clock relative `since`/`until` count back from. */
  clock?: () => number;
}

/** Log lines one answer carries; the executor caps a run's job log below this anyway. */
const RUN_LOG_LINES = 1000;

/**
 * `GET /api/runs` (search, run-search.ts), `GET /api/runs/:id` (agent, state, attempts, timings,
 * result or error, pipeline id) and cancel.
 */
export function runsRoutes({ queues, cancel, clock = Date.now }: RunsRoutesDeps): Router {
  const router = Router();
  router.get('/api/runs', async (req, res) => {
    const query = parseInput(runSearchQuery, req.query, 'query');
    const now = clock();
    const since = query.since === undefined ? undefined : resolveInstant(query.since, now, 'since');
    const until = query.until === undefined ? undefined : resolveInstant(query.until, now, 'until');
    if (since !== undefined && until !== undefined && since > until) throw new InvalidInputError('since: must not be later than until');
    const page = await searchRuns(queues.agents, {
      filter: {
        ...(query.agent ? { agent: query.agent } : {}),
        ...(query.state ? { states: query.state } : {}),
        ...(query.trigger ? { trigger: query.trigger } : {}),
        ...(query.pipeline ? { pipelineId: query.pipeline } : {}),
        ...(since !== undefined ? { since } : {}),
        ...(until !== undefined ? { until } : {}),
        ...(query.q ? { text: query.q } : {}),
      },
      limit: query.limit,
      cursor: query.cursor,
      now,
    });
    res.json(page);
  });
  // The run's own log lines (`ctx.log`, copied into BullMQ's job log, capped per run by the executor).
  router.get('/api/runs/:id/logs', async (req, res) => {
    const runId = parseInput(runIdParam, req.params.id, 'id');
    await requireRunState(queues.agents, runId);
    const { logs, count } = await queues.agents.getJobLogs(runId, 0, RUN_LOG_LINES - 1);
    res.json({ id: runId, logs, count });
  });
  router.get('/api/runs/:id', async (req, res) => {
    res.json(await lookupRun(queues.agents, parseInput(runIdParam, req.params.id, 'id')));
  });
  if (cancel) {
    router.post('/api/runs/:id/cancel', jsonBody(), async (req: Request<{ id: string }>, res) => {
      const runId = parseInput(runIdParam, req.params.id, 'id');
      const { reason } = parseInput(cancelBody, bodyOf(req.body), 'body');
      // 404 for an id that is not a run (one of BullMQ's own keys) before cancel reads it as one.
      await requireRunState(queues.agents, runId);
      res.json(await cancel(runId, reason));
    });
  }
  return router;
}
