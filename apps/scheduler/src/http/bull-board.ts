import { Router, type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { requireRunState, type Queues } from '@werkpilot/shared';

export const BULL_BOARD_PATH = '/queues';

/**
 * Bull Board for the `agents` and `system` queues at /queues. Without dashboard credentials it is
 * read-only (its buttons are hidden; the auth middleware refuses its mutating calls anyway).
 *
 * Loaded on the first request, not at start: its modules (@bull-board/api and /ui, valibot, lodash,
 * ejs, redis-info) are a fixed cost of every scheduler replica that most never pay back, since
 * people open Bull Board now and then, while Prometheus and the dashboard poll the rest.
 */
export function bullBoardRouter({ queues, readOnly }: { queues: Queues; readOnly: boolean }): Router {
  let board: Promise<Router> | undefined;
  const router = Router();
  router.use((req: Request, res: Response, next: NextFunction) => {
    board ??= createBullBoardRouter({ queues, readOnly });
    board.then(
      (handler) => handler(req, res, next),
      (err: unknown) => {
        board = undefined; // a failed load is retried on the next request
        next(err);
      },
    );
  });
  return router;
}

async function createBullBoardRouter({ queues, readOnly }: { queues: Queues; readOnly: boolean }): Promise<Router> {
  const [{ createBullBoard }, { BullMQAdapter }, { ExpressAdapter }] = await Promise.all([import('@bull-board/api'), import('@bull-board/api/bullMQAdapter'), import('@bull-board/express')]);
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  createBullBoard({
    // @bull-board/express pins its own @bull-board/api patch release, whose adapter type differs
    // only nominally from ours; the runtime interface is the same.
    serverAdapter: serverAdapter as unknown as Parameters<typeof createBullBoard>[0]['serverAdapter'],
    queues: [new BullMQAdapter(queues.agents, { readOnlyMode: readOnly }), new BullMQAdapter(queues.system, { readOnlyMode: readOnly })],
    options: { uiConfig: { boardTitle: 'Werkpilot queues', miscLinks: [{ text: 'Overview', url: '/' }] } },
  });
  // The adapter mounts an express app of its own, which would announce itself again.
  const board = serverAdapter.getRouter() as Express;
  board.disable('x-powered-by');
  const router = Router();
  router.get('/api/queues', listingGuard);
  router.use(jobGuard(queues));
  router.use(board);
  return router;
}

const STATUSES = new Set(['latest', 'active', 'waiting', 'waiting-children', 'prioritized', 'completed', 'failed', 'delayed', 'paused']);
/** Bull Board's own bound is only "at least 1": a page of 10 000 jobs would read them all, inputs and all. */
const MAX_JOBS_PER_PAGE = 100;

/**
 * Checks the listing's query before Bull Board does: it answers an unknown status with a 500 of
 * its own (its error message fails to build), and takes any page size.
 */
const listingGuard: RequestHandler = (req, res, next) => {
  const { status, page, jobsPerPage } = req.query as Record<string, unknown>;
  const problem =
    status !== undefined && (typeof status !== 'string' || !STATUSES.has(status))
      ? `status must be one of ${[...STATUSES].join(', ')}`
      : page !== undefined && !isWholeNumber(page, 1, 1_000_000)
        ? 'page must be a whole number from 1'
        : jobsPerPage !== undefined && !isWholeNumber(jobsPerPage, 1, MAX_JOBS_PER_PAGE)
          ? `jobsPerPage must be a whole number from 1 to ${MAX_JOBS_PER_PAGE}`
          : undefined;
  if (problem) {
    res.status(400).json({ error: problem });
    return;
  }
  next();
};

function isWholeNumber(value: unknown, min: number, max: number): boolean {
  return typeof value === 'string' && /^\d{1,7}$/.test(value) && Number(value) >= min && Number(value) <= max;
}

/** Bull Board's routes that take a job id: `/api/queues/:queueName/:jobId[/<action>]`, per method. */
const JOB_ACTIONS: Record<string, Set<string>> = {
  GET: new Set(['', 'logs', 'flow']),
  PUT: new Set(['retry', 'clean', 'promote', 'remove-unprocessed-children']),
  PATCH: new Set(['update-data', 'delay', 'priority']),
};
/** Queue routes of the same shape as a job's: `GET /api/queues/agents/metrics` names no job. */
const QUEUE_ROUTES = new Set(['metrics', 'default-job-options', 'workers', 'rate-limit', 'job-data-schema']);

/**
 * Answers 404 for a job id that is no job before Bull Board reads it as one: ids like `meta`,
 * `events` or `repeat:<agent>` name BullMQ's own keys, which Bull Board showed as fake jobs or
 * answered with 500 (WRONGTYPE), and whose `clean` would have deleted the queue's own key.
 */
function jobGuard(queues: Queues): Router {
  const router = Router();
  router.all(['/api/queues/:queueName/:jobId', '/api/queues/:queueName/:jobId/:action'], async (req, res, next) => {
    const { queueName, jobId, action = '' } = req.params as { queueName: string; jobId: string; action?: string };
    const queue = queueName === queues.agents.name ? queues.agents : queueName === queues.system.name ? queues.system : undefined;
    const isJobRoute = JOB_ACTIONS[req.method]?.has(action) === true && !(action === '' && QUEUE_ROUTES.has(jobId));
    if (!queue || !isJobRoute) return next();
    try {
      await requireRunState(queue, jobId);
      next();
    } catch (err) {
      if ((err as Error).name !== 'RunNotFoundError') return next(err);
      res.status(404).json({ error: `no job ${JSON.stringify(jobId.slice(0, 200))} in queue ${queueName}` });
    }
  });
  return router;
}
