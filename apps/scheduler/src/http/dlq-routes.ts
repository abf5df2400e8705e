import { Router } from 'express';
import { DeadLetterQueue, dlqPageQuery, parseInput, runIdParam, type Queues } from '@werkpilot/shared';

/**
 * The dead-letter queue (the `agents` queue's failed set): list (paged, newest first, large fields
 * cut), show (in full), retry one, retry all, delete one, purge.
 */
export function dlqRoutes({ queues }: { queues: Queues }): Router {
  const router = Router();
  const dlq = new DeadLetterQueue(queues.agents);
  const id = (raw: string) => parseInput(runIdParam, raw, 'id');

  router.get('/api/dlq', async (req, res) => {
    const { offset, limit } = parseInput(dlqPageQuery, req.query, 'query');
    const [total, entries] = await Promise.all([dlq.size(), dlq.list(offset, limit)]);
    res.json({ total, offset, limit, entries });
  });
  router.get('/api/dlq/:id', async (req, res) => {
    res.json(await dlq.get(id(req.params.id)));
  });
  router.post('/api/dlq/retry', async (_req, res) => {
    res.json({ retried: await dlq.retryAll() });
  });
  router.post('/api/dlq/:id/retry', async (req, res) => {
    const runId = id(req.params.id);
    await dlq.retry(runId);
    res.json({ retried: runId });
  });
  router.delete('/api/dlq', async (_req, res) => {
    res.json({ deleted: await dlq.purge() });
  });
  router.delete('/api/dlq/:id', async (req, res) => {
    const runId = id(req.params.id);
    await dlq.remove(runId);
    res.json({ deleted: runId });
  });
  return router;
}
