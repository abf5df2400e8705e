import { Router, type Request } from 'express';
import {
  DLQ_GROUP_SCAN,
  DeadLetterQueue,
  InvalidInputError,
  applyToDeadLetters,
  bodyOf,
  dlqBulkBody,
  dlqPageQuery,
  dlqSelectorQuery,
  groupDeadLetters,
  parseInput,
  readDeadLetterHeads,
  resolveInstant,
  runIdParam,
  selectDeadLetters,
  type DeadLetterSelector,
  type Queues,
} from '@werkpilot/shared';
import { jsonBody } from './json-body.js';

/**
 * The dead-letter queue (the `agents` queue's failed set): list (paged, newest first, large fields
 * cut), show (in full), retry one, retry all, delete one, purge; and by cause (dlq-groups.ts):
 * groups, a selection's preview, and replay or delete of a selection.
 */
export function dlqRoutes({ queues, clock = Date.now }: { queues: Queues; clock?: () => number }): Router {
  const router = Router();
  const dlq = new DeadLetterQueue(queues.agents);
  const id = (raw: string) => parseInput(runIdParam, raw, 'id');
  const selectorOf = (raw: { group?: string; agent?: string; since?: string; until?: string; match?: string }): DeadLetterSelector => {
    const now = clock();
    const since = raw.since === undefined ? undefined : resolveInstant(raw.since, now, 'since');
    const until = raw.until === undefined ? undefined : resolveInstant(raw.until, now, 'until');
    if (since !== undefined && until !== undefined && since > until) throw new InvalidInputError('since: must not be later than until');
    return {
      ...(raw.group !== undefined ? { group: raw.group } : {}),
      ...(raw.agent !== undefined ? { agent: raw.agent } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      ...(raw.match !== undefined ? { match: raw.match } : {}),
    };
  };

  router.get('/api/dlq', async (req, res) => {
    const { offset, limit } = parseInput(dlqPageQuery, req.query, 'query');
    const [total, entries] = await Promise.all([dlq.size(), dlq.list(offset, limit)]);
    res.json({ total, offset, limit, entries });
  });
  router.get('/api/dlq/groups', async (req, res) => {
    const selector = selectorOf(parseInput(dlqSelectorQuery, req.query, 'query'));
    const [total, heads] = await Promise.all([dlq.size(), readDeadLetterHeads(queues.agents, selector)]);
    const selected = selectDeadLetters(heads, selector);
    res.json({ total, scanned: heads.length, scanLimit: DLQ_GROUP_SCAN, groups: groupDeadLetters(selected) });
  });
  router.get('/api/dlq/selection', async (req, res) => {
    const selector = selectorOf(parseInput(dlqSelectorQuery, req.query, 'query'));
    const selected = selectDeadLetters(await readDeadLetterHeads(queues.agents, selector), selector);
    res.json({ count: selected.length, runIds: selected.map((h) => h.id), agents: [...new Set(selected.map((h) => h.agent))] });
  });
  for (const action of ['replay', 'delete'] as const) {
    router.post(`/api/dlq/${action}`, jsonBody(), async (req: Request, res) => {
      const { expectCount, ...raw } = parseInput(dlqBulkBody, bodyOf(req.body), 'body');
      const done = await applyToDeadLetters(queues.agents, action, selectorOf(raw), expectCount);
      res.json(action === 'replay' ? { replayed: done.length, runIds: done } : { deleted: done.length, runIds: done });
    });
  }
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
