/**
 * What a scenario reports: one row of the results table and of `bench/results/latest.json`.
 * Every figure that has a raw-BullMQ (or raw-Redis) counterpart carries it as `baseline`, measured in
 * the same run on the same Redis, because absolute numbers differ several-fold between machines.
 */
export interface Measurement {
  metric: string;
  /** Ours (the orchestrator's full path). */
  value: number;
  /** Raw BullMQ / raw Redis doing the same work; null when there is no counterpart. */
  baseline: number | null;
  unit: string;
  /** The target for this row, when it has one. */
  target?: Target;
  /** Extra figures behind the row (JSON only), e.g. per-command counts. */
  detail?: Record<string, unknown>;
}

/** A bound on `value` or on `ratio` (value / baseline). */
export interface Target {
  on: 'value' | 'ratio';
  /** Met when the figure is at most this. */
  max?: number;
  /** Met when the figure is at least this. */
  min?: number;
}

/** A measurement with its ratio and verdict, as written to the results file. */
export interface ResultRow extends Measurement {
  scenario: string;
  ratio: number | null;
  /** null when the row has no target. */
  met: boolean | null;
}

export function toRow(scenario: string, m: Measurement): ResultRow {
  const ratio = m.baseline === null || m.baseline === 0 ? null : round(m.value / m.baseline, 3);
  return { scenario, ...m, value: round(m.value, 3), baseline: m.baseline === null ? null : round(m.baseline, 3), ratio, met: verdict(m, ratio) };
}

function verdict(m: Measurement, ratio: number | null): boolean | null {
  if (!m.target) return null;
  const figure = m.target.on === 'ratio' ? ratio : m.value;
  if (figure === null) return null;
  if (m.target.max !== undefined && figure > m.target.max) return false;
  if (m.target.min !== undefined && figure < m.target.min) return false;
  return true;
}

export function describeTarget(target: Target | undefined): string {
  if (!target) return '';
  const subject = target.on === 'ratio' ? 'ratio ' : '';
  if (target.min !== undefined && target.max !== undefined) return `${subject}${target.min}–${target.max}`;
  if (target.min !== undefined) return `${subject}≥ ${target.min}`;
  return `${subject}≤ ${target.max}`;
}

export function round(n: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
