import { Option, type Command } from 'commander';
import type { RunView } from '../api-types.js';
import { CliError, UsageError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext, type CommandContext } from '../command-context.js';
import { formatMs, formatValue, renderTable } from '../table.js';
import { abortableSleep } from '../abortable-sleep.js';

/** What `POST /api/agents/:name/run` answers: the run, and for a pipeline every run in it. */
interface Queued {
  runId: string;
  pipelineId?: string;
  runs?: { agent: string; runId: string }[];
  /** An idempotency key answered the run of an earlier request. */
  replayed?: boolean;
}

const FINISHED = new Set(['completed', 'failed']);
const POLL_MS = 250;

interface RunOptions {
  data?: string;
  withDependents?: boolean;
  wait?: boolean;
  timeout?: string;
  idempotencyKey?: string;
}

export function registerRun(program: Command, io: CliIo): void {
  program
    .command('run')
    .argument('<agent>', 'agent to run now')
    .description('queue a run of an agent now (a pipeline of it and its dependents with --with-dependents)')
    .option('--data <json>', 'JSON given to the run as ctx.data')
    .option('--with-dependents', 'also run every agent that depends on it, in dependency order')
    .option('--wait', 'wait until the run (every run of the pipeline) finished; exit 1 unless all succeeded')
    .option('--idempotency-key <key>', 'queue at most one run for this key (within IDEMPOTENCY_TTL_MS, 24 h): sent again, it answers the first run')
    .addOption(new Option('--timeout <ms>', 'with --wait: give up after this many milliseconds').argParser(positiveInt('--timeout')))
    .action(
      withContext(io, async (ctx, agent: string, options: RunOptions) => {
        const body: Record<string, unknown> = {};
        if (options.data !== undefined) body.data = parseJsonOption('--data', options.data);
        if (options.withDependents) body.withDependents = true;
        if (options.idempotencyKey !== undefined) body.idempotencyKey = options.idempotencyKey;
        const queued = await ctx.api.post<Queued>(`/api/agents/${encodeURIComponent(agent)}/run`, body);
        const runs = queued.runs?.length ? queued.runs : [{ agent, runId: queued.runId }];
        if (!options.wait) {
          if (ctx.isJson) return ctx.printJson(queued);
          ctx.print(queued.pipelineId ? `queued pipeline ${queued.pipelineId}: ${runs.map((r) => `${r.agent} (${r.runId})`).join(', ')}` : `queued run ${queued.runId} of ${agent}`);
          if (queued.replayed) ctx.print('(an earlier request with this idempotency key queued it; nothing new was queued)');
          return;
        }
        if (!ctx.isJson) ctx.print(`queued ${runs.length === 1 ? `run ${queued.runId}` : `pipeline ${queued.pipelineId ?? queued.runId} (${runs.length} runs)`}; waiting…`);
        const finished = await waitForRuns(
          ctx,
          runs.map((r) => r.runId),
          options.timeout as unknown as number | undefined,
        );
        if (ctx.isJson) ctx.printJson({ ...queued, results: finished });
        else ctx.print(renderTable(RESULT_COLUMNS, finished));
        const notOk = finished.filter((r) => outcomeOf(r) !== 'success');
        if (notOk.length > 0) {
          throw new CliError(notOk.map((r) => `run ${r.id} of ${r.agent} ${outcomeOf(r)}${detailOf(r) ? `: ${detailOf(r)}` : ''}`).join('; '));
        }
      }),
    );
}

const RESULT_COLUMNS = [
  { header: 'RUN', value: (r: RunView) => r.id },
  { header: 'AGENT', value: (r: RunView) => r.agent },
  { header: 'OUTCOME', value: (r: RunView) => outcomeOf(r) },
  { header: 'ATTEMPTS', value: (r: RunView) => formatValue(r.attempts?.made), align: 'right' as const },
  { header: 'DURATION', value: (r: RunView) => formatMs(r.timings?.durationMs), align: 'right' as const },
  { header: 'DETAIL', value: (r: RunView) => detailOf(r) },
];

/** success, skipped, cancelled or failed, from BullMQ's state and the executor's result. */
export function outcomeOf(run: RunView): string {
  if (run.state === 'failed') return 'failed';
  const result = run.result as { outcome?: string } | null | undefined;
  return result?.outcome === 'skipped' || result?.outcome === 'cancelled' ? result.outcome : 'success';
}

function detailOf(run: RunView): string {
  const result = run.result as { outcome?: string; reasons?: string[]; reason?: string } | null | undefined;
  if (run.state === 'failed') return formatValue(run.error);
  if (result?.outcome === 'skipped') return (result.reasons ?? []).join('; ');
  if (result?.outcome === 'cancelled') return formatValue(result.reason);
  return '';
}

/** Polls each run until it finished (BullMQ completed or failed). Ctrl-C or the timeout stops it. */
async function waitForRuns(ctx: CommandContext, runIds: string[], timeoutMs: number | undefined): Promise<RunView[]> {
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  const done = new Map<string, RunView>();
  for (;;) {
    for (const id of runIds) {
      if (done.has(id)) continue;
      const run = await ctx.api.get<RunView>(`/api/runs/${encodeURIComponent(id)}`);
      // The API reads the job, then its state: a run finishing in between shows a finished state
      // with the timings of its active phase. Poll once more to get the finished record.
      const isTornRead = run.timings !== undefined && !run.timings.finishedAt;
      if (FINISHED.has(run.state) && !isTornRead) done.set(id, run);
    }
    if (done.size === runIds.length) return runIds.map((id) => done.get(id)!);
    if (ctx.io.signal.aborted) throw new CliError(`stopped waiting; ${runIds.length - done.size} run(s) still going (they keep running)`);
    if (Date.now() > deadline) {
      throw new CliError(`timed out after ${timeoutMs} ms waiting for ${runIds.filter((id) => !done.has(id)).join(', ')} (they keep running)`);
    }
    await abortableSleep(POLL_MS, ctx.io.signal);
  }
}

export function parseJsonOption(flag: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag} must be JSON, e.g. ${flag} '{"since":"2024-01-01"}': ${(err as Error).message}`);
  }
}

export function positiveInt(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value) || Number(value) <= 0) throw new UsageError(`${flag} must be a positive whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  };
}
