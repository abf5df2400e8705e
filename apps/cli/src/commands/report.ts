import { Option, type Command } from 'commander';
import { CliError, UsageError } from '../cli-error.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { formatMs, formatValue, renderTable } from '../table.js';

/** The nightly report as `GET /api/reports[/latest]` serves it (reports.ts › NightlyReport). */
interface AgentReport {
  agent: string;
  score: number | null;
  runs: number;
  failureRate: number | null;
  skipped?: number;
  restarts?: number;
  p50: number | null;
  p95: number | null;
  p99: number | null;
  timeoutMs?: number;
  flagged?: boolean;
  suggestedTimeoutMs?: number | null;
  advice?: string[];
}

interface NightlyReport {
  id: string;
  generatedAt: string;
  timezone?: string;
  since?: string | null;
  agents: Record<string, AgentReport>;
  flagged?: string[];
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** `report [--date YYYY-MM-DD] [--list]`: the nightly optimisation's daily report (kept 30 days). */
export function registerReport(program: Command, io: CliIo): void {
  program
    .command('report')
    .description('the nightly optimisation report: per-agent score, runs, failure rate, p50/p95/p99, advice')
    .addOption(
      new Option('--date <YYYY-MM-DD>', 'the report of that day (in the nightly time zone) instead of the latest').argParser((v) => {
        if (!DATE.test(v) || Number.isNaN(Date.parse(v))) throw new UsageError(`--date must be a date like 2024-05-31, got ${JSON.stringify(v)}`);
        return v;
      }),
    )
    .option('--list', 'list the kept reports')
    .action(
      withContext(io, async (ctx, options: { date?: string; list?: boolean }) => {
        if (options.list) {
          const { reports } = await ctx.api.get<{ reports: NightlyReport[] }>('/api/reports');
          if (ctx.isJson) return ctx.printJson(reports.map(({ id, generatedAt, flagged }) => ({ id, generatedAt, flagged })));
          ctx.print(
            renderTable(
              [
                { header: 'DATE', value: (r: NightlyReport) => r.id },
                { header: 'GENERATED', value: (r) => r.generatedAt },
                { header: 'AGENTS', value: (r) => String(Object.keys(r.agents ?? {}).length), align: 'right' },
                { header: 'FLAGGED', value: (r) => (r.flagged?.length ? r.flagged.join(', ') : '-') },
              ],
              reports,
              '(no reports yet: the first is written at NIGHTLY_CRON, 23:00 Europe/Zurich by default)',
            ),
          );
          return;
        }
        let report: NightlyReport;
        if (options.date) {
          const { reports } = await ctx.api.get<{ reports: NightlyReport[] }>('/api/reports');
          const found = reports.find((r) => r.id === options.date);
          if (!found) {
            throw new CliError(`no report for ${options.date}; kept: ${reports.map((r) => r.id).join(', ') || 'none yet'}`);
          }
          report = found;
        } else {
          report = await ctx.api.get<NightlyReport>('/api/reports/latest');
        }
        if (ctx.isJson) return ctx.printJson(report);
        ctx.print(`Nightly report ${report.id} (generated ${report.generatedAt}${report.timezone ? `, ${report.timezone}` : ''})`);
        const rows = Object.values(report.agents ?? {}).sort((a, b) => (a.score ?? 101) - (b.score ?? 101));
        ctx.print(
          renderTable(
            [
              { header: 'AGENT', value: (r: AgentReport) => `${r.agent}${r.flagged ? ' !' : ''}` },
              { header: 'SCORE', value: (r) => formatValue(r.score), align: 'right' },
              { header: 'RUNS', value: (r) => String(r.runs), align: 'right' },
              { header: 'FAIL %', value: (r) => (r.failureRate === null ? '-' : (r.failureRate * 100).toFixed(1)), align: 'right' },
              { header: 'P50', value: (r) => formatMs(r.p50), align: 'right' },
              { header: 'P95', value: (r) => formatMs(r.p95), align: 'right' },
              { header: 'P99', value: (r) => formatMs(r.p99), align: 'right' },
              { header: 'ADVICE', value: (r) => (r.advice?.length ? r.advice.join('; ') : '-') },
            ],
            rows,
            '(no agents in this report)',
          ),
        );
        if (report.flagged?.length) ctx.print(`flagged (score under 50): ${report.flagged.join(', ')}`);
      }),
    );
}
