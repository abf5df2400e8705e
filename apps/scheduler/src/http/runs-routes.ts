import { Router, type Request } from 'express';
import { bodyOf, cancelBody, lookupRun, parseInput, requireRunState, runIdParam, type Queues } from '@werkpilot/shared';
import { jsonBody } from './json-body.js';

export interface RunsRoutesDeps {
  queues: Queues;
  /** Run cancellation (run-cancel.ts); the route is absent without it. */
  cancel?: (runId: string, reason?: string) => Promise<unknown>;
}

/** `GET /api/runs/:id` (agent, state, attempts, timings, result or error, pipeline id) and cancel. */
export function runsRoutes({ queues, cancel }: RunsRoutesDeps): Router {
  const router = Router();
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
