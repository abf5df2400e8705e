import { Option, type Command } from 'commander';
import type { BusEvent } from '../api-types.js';
import { CliError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext, type CommandContext } from '../command-context.js';
import { positiveInt } from './run.js';
import { abortableSleep } from '../abortable-sleep.js';

interface EventsOptions {
  follow?: boolean;
  type?: string[];
  agent?: string[];
  limit: number;
}

const RECONNECT_MS = 3000;

/**
 * `events`: the bus history; `events --follow`: the live bus (server-sent events) until Ctrl-C,
 * reconnecting when the scheduler restarts. `--type` and `--agent` filter on the server
 * (`--type 'agent:*'` matches a prefix). `--json` prints one JSON event per line.
 */
export function registerEvents(program: Command, io: CliIo): void {
  program
    .command('events')
    .description('recent bus events; --follow streams them live until Ctrl-C')
    .option('-f, --follow', 'stream new events as they happen')
    .option('--type <types...>', "only these event types (comma-separated or repeated; 'agent:*' matches a prefix)")
    .option('--agent <agents...>', 'only events of these agents')
    .addOption(new Option('--limit <n>', 'how many recent events (without --follow; at most 1000)').default(50).argParser(positiveInt('--limit')))
    .action(
      withContext(io, async (ctx, options: EventsOptions) => {
        const filters = {
          type:
            options.type
              ?.flatMap((t) => t.split(','))
              .filter(Boolean)
              .join(',') || undefined,
          agent:
            options.agent
              ?.flatMap((a) => a.split(','))
              .filter(Boolean)
              .join(',') || undefined,
        };
        if (!options.follow) {
          const { events } = await ctx.api.get<{ events: BusEvent[] }>('/api/events/recent', { limit: options.limit, ...filters });
          if (ctx.isJson) return ctx.printJson(events);
          if (events.length === 0) ctx.print('(no events)');
          for (const event of events) ctx.print(formatEvent(event));
          return;
        }
        await follow(ctx, filters);
      }),
    );
}

async function follow(ctx: CommandContext, filters: { type?: string | undefined; agent?: string | undefined }): Promise<void> {
  const params = new URLSearchParams();
  if (filters.type) params.set('type', filters.type);
  if (filters.agent) params.set('agent', filters.agent);
  const path = `/api/events${params.toString() ? `?${params.toString()}` : ''}`;
  let isFirst = true;
  while (!ctx.io.signal.aborted) {
    let res: Response;
    try {
      res = await ctx.api.stream(path, ctx.io.signal);
    } catch (err) {
      // The first connection must work (wrong URL, token, filter: say so and stop); later ones
      // are reconnections while a scheduler restarts.
      if (isFirst || ctx.io.signal.aborted || !(err instanceof CliError) || err.exitCode === 2) throw err;
      ctx.io.stderr(`werkpilot: ${err.message}; retrying in ${RECONNECT_MS / 1000}s\n`);
      await abortableSleep(RECONNECT_MS, ctx.io.signal);
      continue;
    }
    isFirst = false;
    try {
      for await (const event of readEvents(res)) {
        ctx.print(ctx.isJson ? JSON.stringify(event) : formatEvent(event));
      }
    } catch {
      // connection dropped (or aborted): reconnect below unless aborted
    }
    if (ctx.io.signal.aborted) return;
    ctx.io.stderr(`werkpilot: event stream closed; reconnecting in ${RECONNECT_MS / 1000}s\n`);
    await abortableSleep(RECONNECT_MS, ctx.io.signal);
  }
}

/** Parses a text/event-stream body into bus events (`data:` lines; comments and retry ignored). */
export async function* readEvents(res: Response): AsyncGenerator<BusEvent> {
  if (!res.body) return;
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = message
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (!data) continue;
      try {
        yield JSON.parse(data) as BusEvent;
      } catch {
        // not an event of ours; skip it
      }
    }
  }
}

/** `2024-05-01T10:00:00.000Z  agent:completed  crm-sync  {"runId":"12","durationMs":85}` */
export function formatEvent(event: BusEvent): string {
  const data = event.data && typeof event.data === 'object' && Object.keys(event.data).length === 0 ? '' : JSON.stringify(event.data ?? '');
  return [event.at, event.type.padEnd(20), (event.agent ?? '-').padEnd(18), data].join('  ').trimEnd();
}
