import type { Command } from 'commander';
import { circuitStateOf, type AgentView, type ControlsView, type RunView } from '../api-types.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { dash, formatAgo, formatMs, formatValue, renderFields, renderTable, truncate, type Column } from '../table.js';

/** Shown only when the fleet has several shards (WERKPILOT_SHARDS). */
const SHARD_COLUMN: Column<AgentView> = { header: 'SHARD', value: (a) => formatValue(a.shard), align: 'right' };

const COLUMNS: Column<AgentView>[] = [
  { header: 'AGENT', value: (a) => a.name },
  { header: 'PRI', value: (a) => formatValue(a.priority), align: 'right' },
  { header: 'DEPTH', value: (a) => formatValue(a.dependencyDepth), align: 'right' },
  { header: 'SCHEDULE', value: (a) => (a.schedule ? a.schedule.cron + (a.schedule.tz ? ` ${a.schedule.tz}` : '') + (a.controls?.schedulePaused ? ' (PAUSED)' : '') : 'manual') },
  { header: 'CONTROLS', value: (a) => formatControls(a.controls) },
  { header: 'ENABLED', value: (a) => (a.enabled === undefined ? dash : a.enabled ? 'yes' : 'NO') },
  { header: 'HEALTH', value: (a) => formatValue(a.health) },
  { header: 'CIRCUIT', value: (a) => formatValue(circuitStateOf(a.circuit)) },
  { header: 'SCORE', value: (a) => formatValue(a.score), align: 'right' },
  { header: 'RUNS', value: (a) => formatValue(a.runs), align: 'right' },
  { header: 'FAILED', value: (a) => formatValue(a.failures), align: 'right' },
  { header: 'P50', value: (a) => formatMs(a.p50), align: 'right' },
  { header: 'P95', value: (a) => formatMs(a.p95), align: 'right' },
  { header: 'P99', value: (a) => formatMs(a.p99), align: 'right' },
  { header: 'LAST RUN', value: (a) => (a.lastRunAt ? `${formatAgo(a.lastRunAt)} ${a.lastOutcome ?? ''}`.trim() : dash) },
];

export function registerAgents(program: Command, io: CliIo): void {
  program
    .command('agents')
    .argument('[agent]', 'show one agent in detail, with its last runs')
    .description('the agents: priority, depth, schedule, health, circuit, score, runs, p50/p95/p99')
    .action(
      withContext(io, async (ctx, name: string | undefined) => {
        if (name !== undefined) {
          const agent = await ctx.api.get<AgentView & { dependents?: string[]; lastRuns?: RunView[]; shards?: number }>(`/api/agents/${encodeURIComponent(name)}`);
          if (ctx.isJson) return ctx.printJson(agent);
          ctx.print(renderFields(detailFields(agent)));
          if (agent.lastRuns) {
            ctx.print('\nLast runs');
            ctx.print(
              renderTable(
                [
                  { header: 'RUN', value: (r: RunView) => r.id },
                  { header: 'STATE', value: (r) => r.state },
                  { header: 'TRIGGER', value: (r) => formatValue(r.trigger) },
                  { header: 'FINISHED', value: (r) => formatAgo(r.timings?.finishedAt ?? r.timings?.startedAt) },
                  { header: 'DURATION', value: (r) => formatMs(r.timings?.durationMs), align: 'right' },
                  { header: 'ERROR', value: (r) => truncate(formatValue(r.error), 60) },
                ],
                agent.lastRuns,
              ),
            );
          }
          return;
        }
        const { agents, shards = 1 } = await ctx.api.get<{ agents: AgentView[]; shards?: number }>('/api/agents');
        if (ctx.isJson) return ctx.printJson(agents);
        const columns = shards > 1 ? [COLUMNS[0]!, SHARD_COLUMN, ...COLUMNS.slice(1)] : COLUMNS;
        ctx.print(renderTable(columns, agents, '(no agents registered)'));
      }),
    );
}

function detailFields(a: AgentView & { dependents?: string[]; shards?: number }): [string, string][] {
  return [
    ['Agent', a.name],
    ...((a.shards ?? 1) > 1 ? ([['Shard', `${a.shard} of ${a.shards}`]] as [string, string][]) : []),
    ['Priority', formatValue(a.priority)],
    ['Depth', formatValue(a.dependencyDepth)],
    ['Depends on', a.dependsOn?.length ? a.dependsOn.join(', ') : 'nothing'],
    ['Dependents', a.dependents?.length ? a.dependents.join(', ') : 'none'],
    ['Schedule', a.schedule ? `${a.schedule.cron}${a.schedule.tz ? ` (${a.schedule.tz})` : ''}` : 'manual only'],
    ['Timeout', formatMs(a.timeoutMs)],
    ...controlFields(a.controls),
    ['Enabled', a.enabled === undefined ? dash : a.enabled ? 'yes' : 'no'],
    ['Health', `${formatValue(a.health)}${a.healthReasons?.length ? `: ${a.healthReasons.join('; ')}` : ''}`],
    ['Circuit', formatValue(circuitStateOf(a.circuit))],
    ['Score', formatValue(a.score)],
    ['Runs', `${a.runs ?? 0} (${a.successes ?? 0} ok, ${a.failures ?? 0} failed, ${a.skipped ?? 0} skipped)`],
    ['p50/p95/p99', `${formatMs(a.p50)} / ${formatMs(a.p95)} / ${formatMs(a.p99)}`],
    ['Last run', a.lastRunAt ? `${formatAgo(a.lastRunAt)} (${a.lastOutcome ?? '?'})` : 'never'],
    ['Last error', formatValue(a.lastError)],
  ];
}

/** One cell: `2/key queue · 1 running · 3 waiting · 5/1s · openai`; `-` for the defaults (one at a time, skip). */
export function formatControls(c: ControlsView | undefined): string {
  if (!c) return dash;
  const parts: string[] = [];
  const limit = c.concurrency ? `${c.concurrency.limit}${c.concurrency.keyed ? '/key' : ''}` : 'no limit';
  if (c.overlap !== 'skip' || c.concurrency?.limit !== 1 || c.concurrency?.keyed) parts.push(`${limit} ${c.overlap}`);
  if (c.running) parts.push(`${c.running} running`);
  if (c.waiting) parts.push(`${c.waiting} waiting`);
  if (c.rateLimit) parts.push(`${c.rateLimit.max}/${formatMs(c.rateLimit.perMs)}${c.rateLimit.keyed ? '/key' : ''}`);
  for (const l of c.limiters ?? []) parts.push(l.name);
  if (c.waitingForTokens) parts.push(`${c.waitingForTokens} rate-limited`);
  return parts.length > 0 ? parts.join(' · ') : dash;
}

function controlFields(c: ControlsView | undefined): [string, string][] {
  if (!c) return [];
  const catchUp = c.catchUp === null || c.catchUp === undefined ? dash : typeof c.catchUp === 'string' ? c.catchUp : `window ${formatMs(c.catchUp.windowMs)}`;
  return [
    ['Concurrency', c.concurrency ? `${c.concurrency.limit} at once${c.concurrency.keyed ? ' per key' : ''}, overlap ${c.overlap}` : `no limit (overlap ${c.overlap})`],
    ['Running/waiting', c.running === undefined ? dash : `${c.running} running, ${c.waiting ?? 0} waiting for a slot, ${c.waitingForTokens ?? 0} for tokens`],
    ['Rate limit', c.rateLimit ? `${c.rateLimit.max} per ${formatMs(c.rateLimit.perMs)}${c.rateLimit.keyed ? ' per key' : ''}` : 'none'],
    ['Limiters', c.limiters?.length ? c.limiters.map((l) => `${l.name} (${l.cost}/run${l.max !== null ? `, ${l.max} per ${formatMs(l.perMs)}` : ''})`).join(', ') : 'none'],
    ['Rate-limited', c.rateLimited === undefined ? dash : `${c.rateLimited} runs delayed so far`],
    ['Catch-up', catchUp],
    ['Schedule', c.schedulePaused === undefined ? dash : c.schedulePaused ? 'PAUSED (werkpilot resume to run it again)' : 'running'],
  ];
}
