import type { Command } from 'commander';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { formatValue } from '../table.js';

/** `cancel <runId>`: a queued, delayed or parked run ends as cancelled at once, a running one's AbortSignal fires; no retry either way. */
export function registerCancel(program: Command, io: CliIo): void {
  program
    .command('cancel')
    .argument('<runId>', 'run id (from `run`, `agents <agent>` or the dashboard)')
    .option('--reason <text>', 'recorded with the cancellation')
    .description('cancel a run: queued, delayed or parked ones end at once, a running one when its AbortSignal fires; its dependents are skipped; no retry')
    .action(
      withContext(io, async (ctx, runId: string, options: { reason?: string }) => {
        const answer = await ctx.api.post<Record<string, unknown>>(`/api/runs/${encodeURIComponent(runId)}/cancel`, options.reason ? { reason: options.reason } : {});
        if (ctx.isJson) return ctx.printJson(answer);
        const of = answer?.agent ? ` of ${formatValue(answer.agent)}` : '';
        if (answer?.outcome === 'aborting') {
          ctx.print(`cancelling run ${runId}${of}: aborting on worker ${formatValue(answer.workerId)} (its signal fired; it ends as cancelled)`);
        } else {
          ctx.print(`cancelled run ${runId}${of} (it was ${formatValue(answer?.state)})`);
        }
      }),
    );
}
