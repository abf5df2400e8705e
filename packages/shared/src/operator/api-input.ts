import { z } from 'zod';
import { BUS_HISTORY_LENGTH } from '../messaging/bus.js';
import { InvalidInputError } from '../process/errors.js';
import { RUN_ID_PATTERN } from '../run/run-lookup.js';
import { SEARCH_MAX_LIMIT, SEARCH_STATES } from '../run/run-search.js';
import { INSTANT_HINT, isInstant } from './time-range.js';

/**
 * Zod schemas for the operator API's input (HTTP handlers and the CLI share them), and one way to apply them: a failure becomes an
 * InvalidInputError naming the field, which the error handler answers with 400 `{ "error" }`.
 */
export const agentNameParam = z.string().regex(/^[a-z0-9][a-z0-9-]{0,99}$/, 'agent names look like crm-sync ([a-z0-9][a-z0-9-]*)');

export const runIdParam = z.string().regex(RUN_ID_PATTERN, 'run ids are letters, digits, ":", "_", "." and "-" (at most 200)');

const pageNumber = (fallback: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,6}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(0).max(max))
    .optional()
    .transform((v: number | undefined) => v ?? fallback);

export const dlqPageQuery = z.object({
  offset: pageNumber(0, 100_000),
  limit: pageNumber(20, 100),
});

/** How deeply a run's input may nest: beyond it JSON tools (and stack-bound parsers) stop being safe. */
export const MAX_RUN_DATA_DEPTH = 100;

export const runBody = z
  .object({
    data: z
      .unknown()
      .optional()
      .refine((data) => depthOf(data, MAX_RUN_DATA_DEPTH) <= MAX_RUN_DATA_DEPTH, `must not nest deeper than ${MAX_RUN_DATA_DEPTH} levels`),
    withDependents: z.boolean().optional(),
    /** Checked by checkIdempotencyKey (idempotent-triggers.ts); the `Idempotency-Key` header is the other way to send it. */
    idempotencyKey: z.string().optional(),
  })
  .strict();

const instant = z
  .string()
  .max(64)
  .refine((v) => /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(v) && Number.isFinite(Date.parse(v)), 'must be an ISO 8601 time such as 2025-01-31T00:00:00Z')
  .transform((v) => Date.parse(v));

/** `POST /api/agents/:name/backfill`: the ticks from `from` to `to` (inclusive), ISO 8601. */
export const backfillBody = z
  .object({
    from: instant,
    to: instant,
    data: runBody.shape.data,
  })
  .strict();

export const cancelBody = z.object({ reason: z.string().trim().min(1).max(500).optional() }).strict();

/** `GET /api/events/recent`: at most what the history keeps. */
export const recentEventsQuery = z.object({ limit: pageNumber(100, BUS_HISTORY_LENGTH) });

/** Parses `value` or throws InvalidInputError with the first problem, prefixed by `what`. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue && issue.path.length > 0 ? `${what}.${issue.path.join('.')}` : what;
  throw new InvalidInputError(`${path}: ${issue?.message ?? 'invalid'}`);
}

/**
 * How deeply `value` nests (a scalar is 0, `[1]` is 1), counted without recursion and given up
 * past `limit`: a 2 MB body can nest a million levels, which must not take the process's stack.
 */
function depthOf(value: unknown, limit: number): number {
  let deepest = 0;
  const pending: [unknown, number][] = [[value, 0]];
  while (pending.length > 0) {
    const [node, depth] = pending.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    if (depth + 1 > deepest) deepest = depth + 1;
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      if (typeof child === 'object' && child !== null) pending.push([child, depth + 1]);
    }
  }
  return deepest;
}

/** A JSON body, or `{}` when none was sent; express leaves `req.body` undefined without one. */
export function bodyOf(body: unknown): unknown {
  return body === undefined ? {} : body;
}

export const pipelineIdParam = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$/, 'pipeline ids are letters, digits, ":", "_", "." and "-" (at most 200)');

const searchStates = z
  .string()
  .max(200)
  .transform((v) => v.split(','))
  .pipe(z.array(z.enum(SEARCH_STATES, { message: `each state must be one of ${SEARCH_STATES.join(', ')}` })));

const searchInstant = z.string().refine(isInstant, INSTANT_HINT);

/**
 * `GET /api/runs`: the run search's filters (run-search.ts). Strict, so a misspelt parameter
 * (`?agnet=`) is a 400 naming it instead of a search that silently ignores it. `since`/`until` stay
 * text here: relative spans are resolved against the handler's clock (resolveInstant).
 */
export const runSearchQuery = z
  .object({
    agent: agentNameParam.optional(),
    state: searchStates.optional(),
    trigger: z.enum(['cron', 'manual', 'pipeline', 'retry', 'catch-up', 'backfill'], { message: 'must be one of cron, manual, pipeline, retry, catch-up, backfill' }).optional(),
    pipeline: pipelineIdParam.optional(),
    since: searchInstant.optional(),
    until: searchInstant.optional(),
    q: z.string().trim().min(1, 'must not be empty').max(200, 'at most 200 characters').optional(),
    cursor: z
      .string()
      .max(500)
      .regex(/^[A-Za-z0-9_-]+$/, 'not a cursor this API gave')
      .optional(),
    limit: pageNumber(20, SEARCH_MAX_LIMIT).pipe(z.number().min(1, 'must be at least 1')),
  })
  .strict();

const dlqSelectorFields = {
  group: z
    .string()
    .regex(/^[0-9a-f]{12}$/, 'group ids are 12 hex digits, as GET /api/dlq/groups gives them')
    .optional(),
  agent: agentNameParam.optional(),
  since: searchInstant.optional(),
  until: searchInstant.optional(),
  match: z.string().trim().min(1, 'must not be empty').max(200, 'at most 200 characters').optional(),
};

/** `GET /api/dlq/groups` and `GET /api/dlq/selection`: which dead-lettered runs (dlq-groups.ts). */
export const dlqSelectorQuery = z.object(dlqSelectorFields).strict();

/**
 * `POST /api/dlq/replay` and `POST /api/dlq/delete`: a selection, and the count its preview showed
 * (`expectCount`), so the action touches exactly what the operator confirmed. An empty selection is
 * refused: the whole DLQ has its own actions (retry all, purge).
 */
export const dlqBulkBody = z
  .object({ ...dlqSelectorFields, expectCount: z.number().int().min(0).max(1_000_000).optional() })
  .strict()
  .refine((b) => [b.group, b.agent, b.since, b.until, b.match].some((v) => v !== undefined), {
    message: 'name a group, an agent, a time range (since, until) or a text to match; for every dead-lettered run use retry-all or purge',
  });
