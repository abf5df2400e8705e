import type { Command } from 'commander';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { parseJsonOption } from './run.js';

interface BackfillAnswer {
  backfillId: string;
  runs: { runId: string; scheduledAt: string }[];
}

/** `pause <agent>`, `resume <agent>`, `backfill <agent> --from --to`: an agent's schedule. */
export function registerSchedule(program: Command, io: CliIo): void {
  for (const action of ['pause', 'resume'] as const) {
    program
      .command(action)
      .argument('<agent>', 'a scheduled agent')
      .description(
        action === 'pause'
          ? "pause an agent's schedule: no ticks until resumed (manual runs still run; the agent stays enabled)"
          : 'resume a paused schedule: the next tick is the first after now (paused ticks are not caught up)',
      )
      .action(
        withContext(io, async (ctx, agent: string) => {
          const answer = await ctx.api.post<unknown>(`/api/agents/${encodeURIComponent(agent)}/schedule/${action}`);
          if (ctx.isJson) return ctx.printJson(answer);
          ctx.print(`${action === 'pause' ? 'paused' : 'resumed'} the schedule of ${agent}`);
        }),
      );
  }

  program
    .command('backfill')
    .argument('<agent>', 'a scheduled agent')
    .description("run an agent once for every tick of its schedule in a time range, one after another in tick order; each run's ctx.scheduledAt is its tick")
    .requiredOption('--from <time>', 'first tick at or after this time (ISO 8601, e.g. 2025-03-01T00:00:00Z)')
    .requiredOption('--to <time>', 'last tick at or before this time (ISO 8601); at most 1000 ticks')
    .option('--data <json>', 'JSON given to every run as ctx.data')
    .action(
      withContext(io, async (ctx, agent: string, options: { from: string; to: string; data?: string }) => {
        const body: Record<string, unknown> = { from: options.from, to: options.to };
        if (options.data !== undefined) body.data = parseJsonOption('--data', options.data);
        const answer = await ctx.api.post<BackfillAnswer>(`/api/agents/${encodeURIComponent(agent)}/backfill`, body);
        if (ctx.isJson) return ctx.printJson(answer);
        const first = answer.runs[0]!;
        const last = answer.runs.at(-1)!;
        ctx.print(`queued ${answer.runs.length} run${answer.runs.length === 1 ? '' : 's'} of ${agent} (backfill ${answer.backfillId}), ticks ${first.scheduledAt} to ${last.scheduledAt}`);
      }),
    );
}
