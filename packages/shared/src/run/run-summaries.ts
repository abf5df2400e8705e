import type { JobState, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { parse as parsePartialJson } from 'partial-json';
import type { RunView } from './run-lookup.js';
import { TRACE_ID_FIELD } from './run-completion.js';
import { traceIdOfMetadata } from '../observability/run-tracing.js';
import { defineScripts } from '../redis/redis-scripts.js';

/**
 * Runs as lists show them (an agent's last runs, the dead-letter queue's pages and the snapshot's
 * last 20): the fields of `GET /api/runs/:id`, but the input, result, error and stack trace cut
 * at LIST_FIELD_BYTES each. A run's input may be up to 1 MiB and lists are open in read-only mode,
 * so lists never read whole jobs: one Lua script reads the fields they show and only the beginning
 * of the large ones, so a list costs the scheduler and Redis kilobytes whatever the runs carry.
 * A cut JSON value is read as far as it goes (`{"rows":[1,2,` gives `{ rows: [1, 2] }`) and named
 * in `truncated`; `GET /api/runs/:id` and `GET /api/dlq/:id` show one run in full.
 */
export interface RunSummary extends RunView {
  /** Which of `data`, `result`, `error`, `stacktrace` hold only their beginning. */
  truncated: TruncatedField[];
  /** Size in bytes of the job's stored data (the input as JSON, with the run's trigger fields). */
  dataBytes: number;
}

export type TruncatedField = 'data' | 'result' | 'error' | 'stacktrace';

/** Bytes of a job's data, result, error and stack trace that a list reads. */
export const LIST_FIELD_BYTES = 2048;

// Reads the listed fields of each job hash in KEYS, and only the first ARGV[1] bytes of its data,
// returnvalue, failedReason and stacktrace (with their full lengths). ARGV[2]: keep only jobs of
// this name ('' keeps all); ARGV[3]: stop after this many. A key that is not a job hash (gone, or
// one of BullMQ's own keys) is skipped. Read-only: it keeps no invariant, it bounds what one call
// returns.
const SUMMARIES_LUA = `
local limit = tonumber(ARGV[1])
local only = ARGV[2]
local max = tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do
  if #out >= max then break end
  if redis.call('TYPE', key).ok == 'hash' then
    local name = redis.call('HGET', key, 'name')
    if name and (only == '' or name == only) then
      local f = redis.call('HMGET', key, 'timestamp', 'processedOn', 'finishedOn', 'atm', 'ats', 'pb', 'opts',
        'data', 'returnvalue', 'failedReason', 'stacktrace', '${TRACE_ID_FIELD}')
      local row = { i, name, f[1] or '', f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[7] or '' }
      for j = 8, 11 do
        local value = f[j] or ''
        row[#row + 1] = string.sub(value, 1, limit)
        row[#row + 1] = #value
      end
      row[#row + 1] = f[12] or ''
      out[#out + 1] = row
    end
  end
end
return out
`;

type SummaryRow = [
  index: number,
  name: string,
  timestamp: string,
  processedOn: string,
  finishedOn: string,
  attemptsMade: string,
  attemptsStarted: string,
  processedBy: string,
  opts: string,
  data: string,
  dataBytes: number,
  result: string,
  resultBytes: number,
  failedReason: string,
  failedReasonBytes: number,
  stacktrace: string,
  stacktraceBytes: number,
  recordedTraceId: string,
];

interface SummaryCommands {
  werkpilotRunSummaries(...args: (string | number)[]): Promise<SummaryRow[]>;
}

/** One job to summarise: its id and the state it was listed in. */
export interface ListedRun {
  id: string;
  state: JobState;
}

type ListedState = 'active' | 'completed' | 'failed' | 'waiting' | 'delayed' | 'prioritized';

/** Run ids newest first in each of `ranges` (`active` is a list, the others sorted sets by time). */
export async function listRunIds(queue: Queue, ranges: readonly { state: ListedState; from: number; to: number }[]): Promise<ListedRun[]> {
  const lists = await Promise.all(ranges.map(({ state, from, to }) => queue.getRanges([state], from, to, false)));
  return lists.flatMap((ids, i) => ids.map((id) => ({ id, state: ranges[i]!.state as JobState })));
}

/**
 * Summaries of `runs` of `queue`, in the order given; runs that are gone (or not jobs) are left
 * out, and with `agent` so are runs of other agents; at most `max` (the first that match). One
 * round trip, on the queue's own connection.
 */
export async function readRunSummaries(queue: Queue, runs: ListedRun[], { agent, max = runs.length }: { agent?: string; max?: number } = {}): Promise<RunSummary[]> {
  if (runs.length === 0 || max <= 0) return [];
  // BullMQ types its client as its own interface; it is the ioredis connection the queue was given.
  const redis = (await queue.getBackend().client) as unknown as Redis & Partial<SummaryCommands>;
  defineScripts(redis, { werkpilotRunSummaries: SUMMARIES_LUA });
  // BullMQ builds its job keys (`{prefix}:<queue>:<id>`); keys.ts holds only ours.
  const keys = runs.map((run) => queue.toKey(run.id));
  const rows = await (redis as Redis & SummaryCommands).werkpilotRunSummaries(keys.length, ...keys, LIST_FIELD_BYTES, agent ?? '', max);
  return rows.map((row) => toSummary(runs[row[0] - 1]!, row));
}

function toSummary(run: ListedRun, row: SummaryRow): RunSummary {
  const [
    ,
    name,
    timestamp,
    processedOn,
    finishedOn,
    attemptsMade,
    attemptsStarted,
    processedBy,
    opts,
    data,
    dataBytes,
    result,
    resultBytes,
    failedReason,
    failedReasonBytes,
    stacktrace,
    stacktraceBytes,
    recordedTraceId,
  ] = row;
  const truncated: TruncatedField[] = [];
  const read = (field: TruncatedField, text: string, bytes: number): unknown => {
    const isCut = bytes > LIST_FIELD_BYTES;
    if (isCut) truncated.push(field);
    if (text === '') return undefined;
    try {
      return isCut ? parsePartialJson(text) : JSON.parse(text);
    } catch {
      return undefined;
    }
  };
  const wrapper = asObject(read('data', data, dataBytes)) as { trigger?: unknown; pipelineId?: unknown; data?: unknown };
  const returned = read('result', result, resultBytes);
  const trace = read('stacktrace', stacktrace, stacktraceBytes);
  if (failedReasonBytes > LIST_FIELD_BYTES) truncated.push('error');
  const started = Number(processedOn) || undefined;
  const finished = Number(finishedOn) || undefined;
  return {
    id: run.id,
    agent: name,
    state: run.state,
    trigger: typeof wrapper.trigger === 'string' ? wrapper.trigger : null,
    pipelineId: typeof wrapper.pipelineId === 'string' ? wrapper.pipelineId : null,
    data: wrapper.data ?? null,
    attempts: { made: Number(attemptsMade) || 0, started: Number(attemptsStarted) || Number(attemptsMade) || 0, max: jobOptions(opts).attempts ?? 1 },
    timings: {
      queuedAt: iso(Number(timestamp)),
      startedAt: iso(started),
      finishedAt: iso(finished),
      durationMs: finished && started ? finished - started : null,
    },
    result: returned ?? null,
    error: failedReason || null,
    stacktrace: Array.isArray(trace) ? trace.filter((line): line is string => typeof line === 'string') : [],
    workerId: processedBy || null,
    traceId: recordedTraceId || traceIdOfMetadata(jobOptions(opts).telemetry?.metadata) || null,
    truncated,
    dataBytes,
  };
}

function asObject(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function jobOptions(opts: string): { attempts?: number; telemetry?: { metadata?: string } } {
  try {
    return asObject(JSON.parse(opts));
  } catch {
    return {};
  }
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : null);
