import { describeTarget, type ResultRow } from './measurement.js';

const COLUMNS = ['scenario', 'metric', 'ours', 'raw', 'ratio', 'unit', 'target', 'met'] as const;

/** The results as an aligned plain-text table (also valid Markdown). */
export function formatTable(rows: readonly ResultRow[]): string {
  const cells = rows.map((r) => [
    r.scenario,
    r.metric,
    formatNumber(r.value),
    r.baseline === null ? '' : formatNumber(r.baseline),
    r.ratio === null ? '' : r.ratio.toFixed(2),
    r.unit,
    describeTarget(r.target),
    r.met === null ? '' : r.met ? 'yes' : 'MISSED',
  ]);
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: readonly string[]) => `| ${values.map((v, i) => (i >= 2 && i <= 4 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (i >= 2 && i <= 4 ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(COLUMNS), rule, ...cells.map(line)].join('\n');
}

function formatNumber(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1000) return Math.round(n).toString();
  if (abs >= 100) return n.toFixed(1);
  if (abs >= 10) return n.toFixed(2);
  return n.toFixed(3);
}
