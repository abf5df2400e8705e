import { Option, type Command } from 'commander';
import type { DeadLetterEntry } from '../api-types.js';
import { UsageError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { confirmDestructive } from '../confirm.js';
import { formatAgo, formatValue, renderFields, renderTable, truncate } from '../table.js';
import { positiveInt } from './run.js';

interface DlqPage {
  total: number;
  offset: number;
  limit: number;
  entries: DeadLetterEntry[];
}

/**
 * `dlq list|show|retry|delete|purge`: the dead-letter queue (runs that exhausted their retries).
 * `delete` and `purge` destroy the failures' records, so they confirm first (see confirm.ts).
 */
export function registerDlq(program: Command, io: CliIo): void {
  const dlq = program.command('dlq').description('dead-letter queue: runs that exhausted their retries');

  dlq
    .command('list')
    .description('dead-lettered runs, newest first')
    .addOption(new Option('--limit <n>', 'how many (at most 100)').default(20).argParser(positiveInt('--limit')))
    .addOption(new Option('--offset <n>', 'skip the newest n').default(0).argParser(wholeNumber('--offset')))
    .action(
      withContext(io, async (ctx, options: { limit: number; offset: number }) => {
        const page = await ctx.api.get<DlqPage>('/api/dlq', { offset: options.offset, limit: options.limit });
        if (ctx.isJson) return ctx.printJson(page);
        ctx.print(
          renderTable(
            [
              { header: 'ID', value: (e: DeadLetterEntry) => e.id },
              { header: 'AGENT', value: (e) => e.agent },
              { header: 'FAILED', value: (e) => formatAgo(e.failedAt) },
              { header: 'ATTEMPTS', value: (e) => formatValue(e.attemptsMade), align: 'right' },
              { header: 'TRIGGER', value: (e) => formatValue(e.trigger) },
              { header: 'ERROR', value: (e) => truncate(e.error, 80) },
            ],
            page.entries,
            '(the dead-letter queue is empty)',
          ),
        );
        if (page.total > 0) {
          const last = page.offset + page.entries.length;
          ctx.print(`${page.offset + 1}-${last} of ${page.total}${last < page.total ? ` (more: --offset ${last})` : ''}`);
        }
      }),
    );

  dlq
    .command('show')
    .argument('<id>', 'run id')
    .description('one dead-lettered run: error, stack trace, data, attempts, worker')
    .action(
      withContext(io, async (ctx, id: string) => {
        const entry = await ctx.api.get<DeadLetterEntry>(`/api/dlq/${encodeURIComponent(id)}`);
        if (ctx.isJson) return ctx.printJson(entry);
        ctx.print(
          renderFields([
            ['Run', entry.id],
            ['Agent', entry.agent],
            ['Error', entry.error],
            ['Attempts', formatValue(entry.attemptsMade)],
            ['Trigger', formatValue(entry.trigger)],
            ['Pipeline', formatValue(entry.pipelineId)],
            ['Queued', formatValue(entry.queuedAt)],
            ['Started', formatValue(entry.startedAt)],
            ['Failed', formatValue(entry.failedAt)],
            ['Worker', formatValue(entry.workerId)],
            ['Data', formatValue(entry.data)],
          ]),
        );
        if (entry.stacktrace?.length) ctx.print(`\nStack trace (last attempt)\n${entry.stacktrace[entry.stacktrace.length - 1]}`);
      }),
    );

  dlq
    .command('retry')
    .argument('[id]', 'run id to retry')
    .option('--all', 'retry every dead-lettered run')
    .description('move a dead-lettered run (or --all of them) back to the queue with fresh attempts')
    .action(
      withContext(io, async (ctx, id: string | undefined, options: { all?: boolean }) => {
        if (options.all && id !== undefined) throw new UsageError('dlq retry takes a run id or --all, not both');
        if (!options.all && id === undefined) throw new UsageError('dlq retry needs a run id, or --all');
        if (options.all) {
          const answer = await ctx.api.post<{ retried: number }>('/api/dlq/retry');
          if (ctx.isJson) return ctx.printJson(answer);
          ctx.print(`retried ${answer.retried} dead-lettered run${answer.retried === 1 ? '' : 's'}`);
          return;
        }
        const answer = await ctx.api.post<{ retried: string }>(`/api/dlq/${encodeURIComponent(id!)}/retry`);
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(`retried run ${id}`);
      }),
    );

  dlq
    .command('delete')
    .argument('<id>', 'run id')
    .option('-y, --yes', 'do not ask for confirmation')
    .description('delete one dead-lettered run (asks first on a terminal; needs --yes otherwise)')
    .action(
      withContext(io, async (ctx, id: string, options: { yes?: boolean }) => {
        await confirmDestructive(ctx.io, `delete dead-lettered run ${id}`, Boolean(options.yes));
        const answer = await ctx.api.delete<{ deleted: string }>(`/api/dlq/${encodeURIComponent(id)}`);
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(`deleted run ${id}`);
      }),
    );

  dlq
    .command('purge')
    .option('-y, --yes', 'do not ask for confirmation')
    .description('delete every dead-lettered run (asks first on a terminal; needs --yes otherwise)')
    .action(
      withContext(io, async (ctx, options: { yes?: boolean }) => {
        await confirmDestructive(ctx.io, 'delete every dead-lettered run', Boolean(options.yes));
        const answer = await ctx.api.delete<{ deleted: number }>('/api/dlq');
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(`deleted ${answer.deleted} dead-lettered run${answer.deleted === 1 ? '' : 's'}`);
      }),
    );
}

function wholeNumber(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${flag} must be a whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  };
}
