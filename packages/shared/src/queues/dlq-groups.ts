import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { DeadLetterQueue } from './dlq.js';
import { RunNotFoundError, SelectionChangedError } from '../process/errors.js';
import type { RunJobData } from './queues.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * The dead-letter queue by cause: failed runs grouped by agent and error signature (the first line
 * of the error with numbers, ids, hex and UUIDs normalised), and bulk replay or deletion of a group
 * or of a filter (agent, time range, text), exact to what a preview counted.
 *
 * Bounded: the DLQ is BullMQ's failed set, capped by DLQ_RETAIN (100 by default); grouping reads at
 * most DLQ_GROUP_SCAN of its newest runs (the time range narrows the set's score range first), and
 * of each run only its agent and the first DLQ_ERROR_BYTES of its error, in one read-only script.
 */
export const DLQ_GROUP_SCAN = 1000;
export const DLQ_ERROR_BYTES = 1024;

/** A dead-lettered run as grouping sees it. */
export interface DeadLetterHead {
  id: string;
  agent: string;
  error: string;
  failedAt: number;
}

export interface DeadLetterGroup {
  /** Stable for an agent and signature: names the group in replay and delete. */
  id: string;
  agent: string;
  signature: string;
  count: number;
  firstSeen: string;
  lastSeen: string;
  /** The newest run's error, as it was. */
  example: string;
  runIds: string[];
}

/** What a bulk action applies to; fields combine with AND. */
export interface DeadLetterSelector {
  group?: string;
  agent?: string;
  since?: number;
  until?: number;
  /** Case-insensitive text in the error. */
  match?: string;
}

/** The cause of an error without what differs from one occurrence to the next. */
export function errorSignature(error: string): string {
  const firstLine = (error.split('\n')[0] ?? '').trim().slice(0, 300);
  return firstLine
    .replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi, '<uuid>')
    .replace(/\b0x[0-9a-f]+\b/gi, '<hex>')
    .replace(/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, '<ip>')
    .replace(/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b/gi, '<hex>')
    .replace(/\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{12,}\b/g, '<id>')
    .replace(/\d+(?:\.\d+)?/g, '<n>');
}

export function groupIdOf(agent: string, signature: string): string {
  return createHash('sha1').update(`${agent}\n${signature}`).digest('hex').slice(0, 12);
}

// KEYS: job hashes. ARGV[1]: bytes of the error to read. Returns { name, error } per key ('' for a
// key that is not a job any more). Read-only.
const HEADS_LUA = `
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'name', 'failedReason')
  out[i] = { f[1] or '', string.sub(f[2] or '', 1, tonumber(ARGV[1])) }
end
return out
`;

interface HeadCommands {
  werkpilotDeadLetterHeads(...args: (string | number)[]): Promise<[string, string][]>;
}

/** The newest DLQ_GROUP_SCAN dead-lettered runs failed within [since, until], newest first. */
export async function readDeadLetterHeads(queue: Queue<RunJobData>, { since, until }: { since?: number; until?: number } = {}): Promise<DeadLetterHead[]> {
  // BullMQ types its client as its own interface; it is the ioredis connection the queue was given.
  const redis = (await queue.getBackend().client) as unknown as Redis & Partial<HeadCommands>;
  defineScripts(redis, { werkpilotDeadLetterHeads: HEADS_LUA });
  const flat = await redis.zrevrangebyscore(queue.toKey('failed'), until ?? '+inf', since ?? '-inf', 'WITHSCORES', 'LIMIT', 0, DLQ_GROUP_SCAN);
  const ids: { id: string; failedAt: number }[] = [];
  for (let i = 0; i < flat.length; i += 2) ids.push({ id: flat[i]!, failedAt: Number(flat[i + 1]) });
  if (ids.length === 0) return [];
  const keys = ids.map(({ id }) => queue.toKey(id));
  const rows = await (redis as Redis & HeadCommands).werkpilotDeadLetterHeads(keys.length, ...keys, DLQ_ERROR_BYTES);
  return ids.flatMap(({ id, failedAt }, i) => (rows[i]![0] === '' ? [] : [{ id, agent: rows[i]![0], error: rows[i]![1] || 'unknown error', failedAt }]));
}

/** Groups heads (newest first) by agent and signature; the largest group first, then the most recent. */
export function groupDeadLetters(heads: readonly DeadLetterHead[]): DeadLetterGroup[] {
  const groups = new Map<string, DeadLetterGroup & { first: number; last: number }>();
  for (const head of heads) {
    const signature = errorSignature(head.error);
    const id = groupIdOf(head.agent, signature);
    let group = groups.get(id);
    if (!group) {
      group = { id, agent: head.agent, signature, count: 0, firstSeen: '', lastSeen: '', example: head.error, runIds: [], first: head.failedAt, last: head.failedAt };
      groups.set(id, group);
    }
    group.count += 1;
    group.runIds.push(head.id);
    group.first = Math.min(group.first, head.failedAt);
    group.last = Math.max(group.last, head.failedAt);
  }
  return [...groups.values()]
    .map(({ first, last, ...group }) => ({ ...group, firstSeen: new Date(first).toISOString(), lastSeen: new Date(last).toISOString() }))
    .sort((a, b) => b.count - a.count || Date.parse(b.lastSeen) - Date.parse(a.lastSeen));
}

/** The heads `selector` picks (the time range is applied when reading: readDeadLetterHeads). */
export function selectDeadLetters(heads: readonly DeadLetterHead[], selector: DeadLetterSelector): DeadLetterHead[] {
  const match = selector.match?.toLowerCase();
  return heads.filter(
    (head) =>
      (selector.agent === undefined || head.agent === selector.agent) &&
      (match === undefined || head.error.toLowerCase().includes(match)) &&
      (selector.group === undefined || groupIdOf(head.agent, errorSignature(head.error)) === selector.group),
  );
}

/** The runs `selector` picks now, newest first. */
export async function selectDeadLetterRuns(queue: Queue<RunJobData>, selector: DeadLetterSelector): Promise<DeadLetterHead[]> {
  const heads = await readDeadLetterHeads(queue, { ...(selector.since !== undefined ? { since: selector.since } : {}), ...(selector.until !== undefined ? { until: selector.until } : {}) });
  return selectDeadLetters(heads, selector);
}

export type BulkAction = 'replay' | 'delete';

/**
 * Replays (fresh attempts) or deletes every run `selector` picks. With `expectCount` (what the
 * preview showed the operator), nothing is done unless the selection still counts exactly that:
 * SelectionChangedError. A run that left the DLQ meanwhile (retried or deleted by someone else) is
 * left out of the answer. Returns the ids acted on.
 */
export async function applyToDeadLetters(queue: Queue<RunJobData>, action: BulkAction, selector: DeadLetterSelector, expectCount?: number): Promise<string[]> {
  const selected = await selectDeadLetterRuns(queue, selector);
  if (expectCount !== undefined && selected.length !== expectCount) throw new SelectionChangedError(expectCount, selected.length);
  const dlq = new DeadLetterQueue(queue);
  const done: string[] = [];
  const CHUNK = 25;
  for (let i = 0; i < selected.length; i += CHUNK) {
    await Promise.all(
      selected.slice(i, i + CHUNK).map(async ({ id }) => {
        try {
          await (action === 'replay' ? dlq.retry(id) : dlq.remove(id));
          done.push(id);
        } catch (err) {
          if (!(err instanceof RunNotFoundError)) throw err;
        }
      }),
    );
  }
  return done;
}
