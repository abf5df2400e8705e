/** Plain-text tables and value formats for the CLI's human-readable output. */

export interface Column<T> {
  header: string;
  value: (row: T) => string;
  /** Numbers read best right-aligned. */
  align?: 'left' | 'right';
}

/** Renders rows as aligned columns under a header; an empty list renders as `empty`. */
export function renderTable<T>(columns: Column<T>[], rows: readonly T[], empty = '(none)'): string {
  if (rows.length === 0) return `${empty}\n`;
  const cells = rows.map((row) => columns.map((c) => sanitize(c.value(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (columns[i]!.align === 'right' ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[line(columns.map((c) => c.header)), ...cells.map(line)].join('\n')}\n`;
}

/** Key/value lines: `label  value`, labels aligned. */
export function renderFields(fields: [string, string][]): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return `${fields.map(([k, v]) => `${k.padEnd(width)}  ${sanitize(v)}`.trimEnd()).join('\n')}\n`;
}

/** Table cells stay on one line. */
function sanitize(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}

export const dash = '-';

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return dash;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  return `${(ms / 60_000).toFixed(1)}m`;
}

/** "3s ago", "5m ago", "2h ago", "4d ago" relative to `now`. */
export function formatAgo(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return dash;
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return dash;
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

export function formatValue(value: unknown): string {
  if (value === null || value === undefined || value === '') return dash;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
