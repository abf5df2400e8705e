import type { Command } from 'commander';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { formatValue } from '../table.js';

/** `cancel <runId>`: a queued run is removed, a running one's AbortSignal fires; no retry either way. */
export function registerCancel(program: Command, io: CliIo): void {
  program
    .command('cancel')
    .argument('<runId>', 'run id (from `run`, `agents <agent>` or the dashboard)')
    .option('--reason <text>', 'recorded with the cancellation')
    .description('cancel a queued or running run (its AbortSignal fires on the worker running it; no retry)')
    .action(
      withContext(io, async (ctx, runId: string, options: { reason?: string }) => {
        const answer = await ctx.api.post<Record<string, unknown>>(
          `/api/runs/${encodeURIComponent(runId)}/cancel`,
          options.reason ? { reason: options.reason } : {},
        );
        if (ctx.isJson) return ctx.printJson(answer);
        const how =
          answer?.outcome === 'removed'
            ? `removed from the queue (was ${formatValue(answer.state)})`
            : answer?.outcome === 'aborted'
              ? `aborted on worker ${formatValue(answer.workerId)}`
              : formatValue(answer?.outcome);
        ctx.print(`cancelled run ${runId}${answer?.agent ? ` of ${formatValue(answer.agent)}` : ''}: ${how}`);
      }),
    );
}
