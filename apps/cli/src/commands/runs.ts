import { Option, type Command } from 'commander';
import type { RunView } from '../api-types.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { formatAgo, formatMs, formatValue, renderTable, truncate } from '../table.js';
import { positiveInt } from './run.js';

interface SearchPage {
  runs: RunView[];
  next: string | null;
  scanned: number;
}

interface RunsOptions {
  agent?: string;
  state?: string;
  trigger?: string;
  pipeline?: string;
  since?: string;
  until?: string;
  match?: string;
  limit: number;
  cursor?: string;
}

/**
 * `runs`: search runs (`GET /api/runs`) by agent, state, trigger, pipeline, time range and text in
 * the id, error or result. The server validates the filters (400 names the parameter, exit 2); one
 * page per call, with the command that fetches the next one.
 */
export function registerRuns(program: Command, io: CliIo): void {
  program
    .command('runs')
    .description('search runs: active, queued, and the completed and failed ones Redis still keeps; newest first')
    .option('--agent <name>', 'runs of this agent')
    .option('--state <states>', 'comma-separated: active, waiting, prioritized, delayed, completed, failed')
    .option('--trigger <trigger>', 'cron, manual, pipeline, retry, catch-up or backfill')
    .option('--pipeline <id>', 'runs of this pipeline')
    .option('--since <time>', 'ended (or, not ended yet, queued) at or after: ISO 8601, or 90s, 15m, 2h, 7d ago')
    .option('--until <time>', 'ended (or queued) at or before, same forms')
    .option('-q, --match <text>', 'text in the run id, its error, result or stack trace (case-insensitive)')
    .addOption(new Option('--limit <n>', 'runs per page (at most 100)').default(20).argParser(positiveInt('--limit')))
    .option('--cursor <cursor>', 'the next page, as the previous page printed it')
    .action(
      withContext(io, async (ctx, options: RunsOptions) => {
        const page = await ctx.api.get<SearchPage>('/api/runs', {
          agent: options.agent,
          state: options.state,
          trigger: options.trigger,
          pipeline: options.pipeline,
          since: options.since,
          until: options.until,
          q: options.match,
          limit: options.limit,
          cursor: options.cursor,
        });
        if (ctx.isJson) return ctx.printJson(page);
        ctx.print(
          renderTable(
            [
              { header: 'ID', value: (r: RunView) => r.id },
              { header: 'AGENT', value: (r) => r.agent },
              { header: 'STATE', value: (r) => r.state },
              { header: 'TRIGGER', value: (r) => formatValue(r.trigger) },
              { header: 'ENDED', value: (r) => formatAgo(r.timings?.finishedAt ?? r.timings?.queuedAt) },
              { header: 'DURATION', value: (r) => formatMs(r.timings?.durationMs), align: 'right' },
              { header: 'ATTEMPTS', value: (r) => formatValue(r.attempts?.made), align: 'right' },
              { header: 'ERROR', value: (r) => truncate(r.error ?? '', 60) },
            ],
            page.runs,
            '(no run matches)',
          ),
        );
        if (page.next) ctx.print(`more (${page.scanned} runs examined): --cursor ${page.next}`);
      }),
    );
}
