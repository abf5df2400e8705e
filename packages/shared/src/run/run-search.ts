import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { InvalidInputError } from '../process/errors.js';
import type { RunJobData } from '../queues/queues.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { listRunIds, readRunSummaries, type ListedRun, type RunSummary } from './run-summaries.js';

/**
 * Run search (`GET /api/runs`, `werkpilot runs`): over what Redis holds about runs — BullMQ's
 * active list, waiting list, prioritized and delayed sets, and the completed and failed sets
 * (bounded by COMPLETED_RETAIN and DLQ_RETAIN). There is no index of its own: the filters are
 * applied inside Redis by one read-only Lua script per batch of runs, so only matches travel.
 *
 * Cost bound: one request examines at most SEARCH_SCAN_BUDGET runs (in batches of SEARCH_BATCH,
 * one script call each), reading at most SEARCH_TEXT_BYTES of each run's error, result and stack
 * trace for `q`. When the budget runs out before `limit` matches, the answer has fewer runs and a
 * `next` cursor that resumes where the scan stopped: a search never costs more than the budget
 * whatever the fleet holds, and a page with fewer runs than `limit` does not mean the end — only
 * `next: null` does.
 *
 * Order: runs not ended yet first (active, waiting, prioritized, delayed), then ended runs newest
 * first by their end (completed and failed merged). `since`/`until` bound an ended run's end time
 * (a score range on the sets: free) and an unfinished run's queued time. The cursor pins the upper
 * end of the time range on the first page, so runs that end while one pages do not shift the pages.
 */
export const SEARCH_SCAN_BUDGET = 1000;
export const SEARCH_BATCH = 250;
export const SEARCH_TEXT_BYTES = 16_384;
export const SEARCH_MAX_LIMIT = 100;

export const SEARCH_STATES = ['active', 'waiting', 'prioritized', 'delayed', 'completed', 'failed'] as const;
export type SearchState = (typeof SEARCH_STATES)[number];

export interface RunSearchFilter {
  agent?: string;
  /** Any of these states (all when absent). */
  states?: readonly SearchState[];
  trigger?: string;
  pipelineId?: string;
  /** Epoch ms, inclusive. */
  since?: number;
  until?: number;
  /** Case-insensitive text in the run id, its error, result or stack trace. */
  text?: string;
}

export interface RunSearchPage {
  runs: RunSummary[];
  /** Resumes the search; null when every source was read to its end. */
  next: string | null;
  /** How many runs this page examined (at most SEARCH_SCAN_BUDGET). */
  scanned: number;
}

const UNFINISHED = ['active', 'waiting', 'prioritized', 'delayed'] as const;
type Unfinished = (typeof UNFINISHED)[number];

/** Where a search stands: the phase (an UNFINISHED index, or 4 = ended runs), offsets, the pinned end. */
interface Cursor {
  p: number;
  o: number;
  oc: number;
  of: number;
  u: number;
}

// KEYS: job hashes. ARGV: 1 agent, 2 trigger, 3 pipeline id, 4 text (lower case), 5/6 queued
// since/until ms ('' = open), 7 max matches, 8 length of the job key's prefix (the id follows it).
// Returns { examined, index... }: it stops at `max` matches so `examined` says where to resume.
// The trigger and pipeline id are read from the start of the job's data, where every producer
// puts them (`{"agent":…,"trigger":…,"pipelineId":…,"data":…}`); other data is decoded whole only
// when small. Read-only: it keeps no invariant.
const SEARCH_LUA = `
local agent, trig, pipe, q = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local since, untl, max, idAt = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local TEXT = ${SEARCH_TEXT_BYTES}
local function runFields(data)
  local head = string.sub(data, 1, 1024)
  local t = string.match(head, '^{"agent":"[^"]*","trigger":"([^"]*)"')
  if t then return t, string.match(head, '^{"agent":"[^"]*","trigger":"[^"]*","pipelineId":"([^"]*)"') or '' end
  if #data <= TEXT then
    local ok, v = pcall(cjson.decode, data)
    if ok and type(v) == 'table' then return tostring(v.trigger or ''), tostring(v.pipelineId or '') end
  end
  return '', ''
end
local function has(value)
  return value ~= nil and value ~= false and string.find(string.lower(string.sub(value, 1, TEXT)), q, 1, true) ~= nil
end
local out = { 0 }
for i, key in ipairs(KEYS) do
  if #out - 1 >= max then break end
  out[1] = i
  if redis.call('TYPE', key).ok == 'hash' then
    local f = redis.call('HMGET', key, 'name', 'timestamp', 'data')
    local ok = f[1] and (agent == '' or f[1] == agent)
    if ok and (since or untl) then
      local ts = tonumber(f[2]) or 0
      ok = (not since or ts >= since) and (not untl or ts <= untl)
    end
    if ok and (trig ~= '' or pipe ~= '') then
      local t, p = runFields(f[3] or '')
      ok = (trig == '' or t == trig) and (pipe == '' or p == pipe)
    end
    if ok and q ~= '' then
      ok = has(string.sub(key, idAt + 1))
      if not ok then
        local g = redis.call('HMGET', key, 'failedReason', 'returnvalue', 'stacktrace')
        ok = has(g[1]) or has(g[2]) or has(g[3])
      end
    end
    if ok then out[#out + 1] = i end
  end
end
return out
`;

interface SearchCommands {
  werkpilotSearchRuns(...args: (string | number)[]): Promise<number[]>;
}

export interface RunSearchOptions {
  filter: RunSearchFilter;
  limit: number;
  cursor?: string | undefined;
  now: number;
}

/** One page of runs of `queue` matching `filter`, at bounded cost (see above). */
export async function searchRuns(queue: Queue<RunJobData>, { filter, limit, cursor: raw, now }: RunSearchOptions): Promise<RunSearchPage> {
  const states = new Set<SearchState>(filter.states?.length ? filter.states : SEARCH_STATES);
  const cursor = raw ? decodeCursor(raw) : { p: 0, o: 0, oc: 0, of: 0, u: filter.until ?? now };
  // BullMQ types its client as its own interface; it is the ioredis connection the queue was given.
  const redis = (await queue.getBackend().client) as unknown as Redis & Partial<SearchCommands>;
  defineScripts(redis, { werkpilotSearchRuns: SEARCH_LUA });
  const search = redis as Redis & SearchCommands;
  const idAt = queue.toKey('').length;
  const text = (filter.text ?? '').toLowerCase();
  const matches: ListedRun[] = [];
  let budget = SEARCH_SCAN_BUDGET;
  let scanned = 0;

  while (matches.length < limit && budget > 0 && cursor.p <= UNFINISHED.length) {
    const size = Math.min(SEARCH_BATCH, budget);
    const isEnded = cursor.p === UNFINISHED.length;
    const phase: Unfinished | undefined = UNFINISHED[cursor.p];
    if (!isEnded && !states.has(phase!)) {
      Object.assign(cursor, { p: cursor.p + 1, o: 0 });
      continue;
    }
    const batch: (ListedRun & { from?: 'c' | 'f' })[] = isEnded
      ? await endedBatch(search, queue, states, cursor, filter.since, size)
      : await listRunIds(queue, [{ state: phase!, from: cursor.o, to: cursor.o + size - 1 }]);
    if (batch.length === 0) {
      Object.assign(cursor, { p: cursor.p + 1, o: 0 });
      continue;
    }
    const keys = batch.map((run) => queue.toKey(run.id));
    const timeBounds = isEnded ? ['', ''] : [filter.since ?? '', filter.until ?? ''];
    const [examined, ...found] = await search.werkpilotSearchRuns(
      keys.length,
      ...keys,
      filter.agent ?? '',
      filter.trigger ?? '',
      filter.pipelineId ?? '',
      text,
      ...timeBounds,
      limit - matches.length,
      idAt,
    );
    const seen = examined ?? batch.length;
    for (const index of found) matches.push(batch[index - 1]!);
    budget -= seen;
    scanned += seen;
    if (isEnded) {
      const taken = batch.slice(0, seen);
      cursor.oc += taken.filter((run) => run.from === 'c').length;
      cursor.of += taken.filter((run) => run.from === 'f').length;
    } else {
      cursor.o += seen;
    }
  }
  const runs = await readRunSummaries(queue, matches);
  return { runs, next: cursor.p <= UNFINISHED.length ? encodeCursor(cursor) : null, scanned };
}

/** The next `size` ended runs (completed and failed merged, newest end first) from the cursor's offsets. */
async function endedBatch(redis: Redis, queue: Queue, states: Set<SearchState>, cursor: Cursor, since: number | undefined, size: number) {
  const min = since ?? '-inf';
  const read = async (state: 'completed' | 'failed', offset: number) => {
    if (!states.has(state)) return [] as { id: string; score: number; state: typeof state }[];
    const flat = await redis.zrevrangebyscore(queue.toKey(state), cursor.u, min, 'WITHSCORES', 'LIMIT', offset, size);
    const out: { id: string; score: number; state: typeof state }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i]!, score: Number(flat[i + 1]), state });
    return out;
  };
  const [completed, failed] = await Promise.all([read('completed', cursor.oc), read('failed', cursor.of)]);
  const merged = [...completed, ...failed].sort((a, b) => b.score - a.score).slice(0, size);
  return merged.map((run) => ({ id: run.id, state: run.state, from: run.state === 'completed' ? ('c' as const) : ('f' as const) }));
}

function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify(cursor)).toString('base64url');
}

function decodeCursor(raw: string): Cursor {
  try {
    const value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Record<string, unknown>;
    const fields = ['p', 'o', 'oc', 'of', 'u'] as const;
    if (fields.every((f) => Number.isSafeInteger(value[f]) && (value[f] as number) >= 0) && (value.p as number) <= UNFINISHED.length) {
      return { p: value.p as number, o: value.o as number, oc: value.oc as number, of: value.of as number, u: value.u as number };
    }
  } catch {
    // falls through to the error below
  }
  throw new InvalidInputError('cursor: not a cursor this API gave (pass the `next` of the previous page unchanged)');
}
