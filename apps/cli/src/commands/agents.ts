import type { Command } from 'commander';
import { circuitStateOf, type AgentView, type RunView } from '../api-types.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { dash, formatAgo, formatMs, formatValue, renderFields, renderTable, truncate, type Column } from '../table.js';

const COLUMNS: Column<AgentView>[] = [
  { header: 'AGENT', value: (a) => a.name },
  { header: 'PRI', value: (a) => formatValue(a.priority), align: 'right' },
  { header: 'DEPTH', value: (a) => formatValue(a.dependencyDepth), align: 'right' },
  { header: 'SCHEDULE', value: (a) => (a.schedule ? a.schedule.cron + (a.schedule.tz ? ` ${a.schedule.tz}` : '') : 'manual') },
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
          const agent = await ctx.api.get<AgentView & { dependents?: string[]; lastRuns?: RunView[] }>(`/api/agents/${encodeURIComponent(name)}`);
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
        const { agents } = await ctx.api.get<{ agents: AgentView[] }>('/api/agents');
        if (ctx.isJson) return ctx.printJson(agents);
        ctx.print(renderTable(COLUMNS, agents, '(no agents registered)'));
      }),
    );
}

function detailFields(a: AgentView & { dependents?: string[] }): [string, string][] {
  return [
    ['Agent', a.name],
    ['Priority', formatValue(a.priority)],
    ['Depth', formatValue(a.dependencyDepth)],
    ['Depends on', a.dependsOn?.length ? a.dependsOn.join(', ') : 'nothing'],
    ['Dependents', a.dependents?.length ? a.dependents.join(', ') : 'none'],
    ['Schedule', a.schedule ? `${a.schedule.cron}${a.schedule.tz ? ` (${a.schedule.tz})` : ''}` : 'manual only'],
    ['Timeout', formatMs(a.timeoutMs)],
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
