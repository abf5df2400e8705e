import { Option, type Command } from 'commander';
import type { DeadLetterGroup } from '@werkpilot/shared';
import type { DeadLetterEntry } from '../api-types.js';
import { UsageError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext, type CommandContext } from '../command-context.js';
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
    .argument('[id]', 'run id (or select runs with --group, --agent, --since, --until, --match)')
    .option('-y, --yes', 'do not ask for confirmation')
    .addOption(new Option('--group <id>', 'every run of this group (dlq groups)'))
    .option('--agent <name>', 'runs of this agent')
    .option('--since <time>', 'failed at or after: ISO 8601, or 90s, 15m, 2h, 7d ago')
    .option('--until <time>', 'failed at or before, same forms')
    .option('--match <text>', 'text in the error (case-insensitive)')
    .description('delete one dead-lettered run, or every run a selection picks (asks first on a terminal; needs --yes otherwise)')
    .action(
      withContext(io, async (ctx, id: string | undefined, options: SelectionOptions & { yes?: boolean }) => {
        const selection = selectionOf(options);
        if (id !== undefined && Object.keys(selection).length > 0) throw new UsageError('dlq delete takes a run id or a selection (--group, --agent, --since, --until, --match), not both');
        if (id === undefined) return bulk(ctx, 'delete', selection, Boolean(options.yes));
        await confirmDestructive(ctx.io, `delete dead-lettered run ${id}`, Boolean(options.yes));
        const answer = await ctx.api.delete<{ deleted: string }>(`/api/dlq/${encodeURIComponent(id)}`);
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(`deleted run ${id}`);
      }),
    );

  dlq
    .command('groups')
    .option('--agent <name>', 'groups of this agent')
    .option('--since <time>', 'runs failed at or after: ISO 8601, or 90s, 15m, 2h, 7d ago')
    .option('--until <time>', 'runs failed at or before, same forms')
    .option('--match <text>', 'text in the error (case-insensitive)')
    .description('dead-lettered runs grouped by agent and error signature (numbers, ids, hex and UUIDs normalised), largest first')
    .action(
      withContext(io, async (ctx, options: SelectionOptions) => {
        const answer = await ctx.api.get<GroupsAnswer>('/api/dlq/groups', selectionOf(options));
        if (ctx.isJson) return ctx.printJson(answer);
        ctx.print(
          renderTable(
            [
              { header: 'GROUP', value: (g: DeadLetterGroup) => g.id },
              { header: 'AGENT', value: (g) => g.agent },
              { header: 'COUNT', value: (g) => String(g.count), align: 'right' },
              { header: 'FIRST', value: (g) => formatAgo(g.firstSeen) },
              { header: 'LAST', value: (g) => formatAgo(g.lastSeen) },
              { header: 'SIGNATURE', value: (g) => truncate(g.signature, 80) },
            ],
            answer.groups,
            '(no dead-lettered run matches)',
          ),
        );
        if (answer.scanned < answer.total) ctx.print(`(grouped the newest ${answer.scanned} of ${answer.total} dead-lettered runs)`);
      }),
    );

  dlq
    .command('replay')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--group <id>', 'every run of this group (dlq groups)')
    .option('--agent <name>', 'runs of this agent')
    .option('--since <time>', 'failed at or after: ISO 8601, or 90s, 15m, 2h, 7d ago')
    .option('--until <time>', 'failed at or before, same forms')
    .option('--match <text>', 'text in the error (case-insensitive)')
    .description('run again, with fresh attempts, every dead-lettered run a selection picks: shows how many, asks (needs --yes without a terminal)')
    .action(
      withContext(io, async (ctx, options: SelectionOptions & { yes?: boolean }) => {
        await bulk(ctx, 'replay', selectionOf(options), Boolean(options.yes));
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

interface SelectionOptions {
  group?: string;
  agent?: string;
  since?: string;
  until?: string;
  match?: string;
}

interface GroupsAnswer {
  total: number;
  scanned: number;
  groups: DeadLetterGroup[];
}

function selectionOf(options: SelectionOptions): Record<string, string> {
  const selection: Record<string, string> = {};
  for (const key of ['group', 'agent', 'since', 'until', 'match'] as const) if (options[key] !== undefined) selection[key] = options[key]!;
  return selection;
}

/**
 * Replay or delete a selection: the preview's count is shown and confirmed, then sent along
 * (`expectCount`), so the server acts only if the selection still counts what was confirmed.
 */
async function bulk(ctx: CommandContext, action: 'replay' | 'delete', selection: Record<string, string>, hasYes: boolean): Promise<void> {
  if (Object.keys(selection).length === 0) {
    throw new UsageError(`dlq ${action} needs a selection (--group, --agent, --since, --until or --match)${action === 'replay' ? '; for every run use dlq retry --all' : ''}`);
  }
  const preview = await ctx.api.get<{ count: number; runIds: string[] }>('/api/dlq/selection', selection);
  const described = Object.entries(selection)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  if (preview.count === 0) {
    if (ctx.isJson) return ctx.printJson(action === 'replay' ? { replayed: 0, runIds: [] } : { deleted: 0, runIds: [] });
    ctx.print(`no dead-lettered run matches (${described})`);
    return;
  }
  await confirmDestructive(ctx.io, `${action} ${preview.count} dead-lettered run${preview.count === 1 ? '' : 's'} (${described})`, hasYes);
  const answer = await ctx.api.post<{ replayed?: number; deleted?: number; runIds: string[] }>(`/api/dlq/${action}`, { ...selection, expectCount: preview.count });
  if (ctx.isJson) return ctx.printJson(answer);
  const count = answer.replayed ?? answer.deleted ?? 0;
  ctx.print(`${action === 'replay' ? 'replayed' : 'deleted'} ${count} dead-lettered run${count === 1 ? '' : 's'}: ${answer.runIds.join(' ')}`);
}

function wholeNumber(flag: string): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${flag} must be a whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  };
}
