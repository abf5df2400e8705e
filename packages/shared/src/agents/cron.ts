import { CronExpressionParser } from 'cron-parser';

/**
 * Cron and timezone validation. We parse with cron-parser, the library BullMQ's job schedulers use,
 * so an expression we accept is one BullMQ will schedule.
 */

/** Returns a problem description, or null when the zone is a valid IANA time zone. */
export function timezoneProblem(tz: string): string | null {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return null;
  } catch {
    return `"${tz}" is not an IANA time zone (e.g. Europe/Zurich, UTC)`;
  }
}

/** Returns a problem description, or null when `expr` is a valid 5- or 6-field cron expression. */
export function cronProblem(expr: string, tz?: string): string | null {
  if (typeof expr !== 'string' || expr.trim() === '') return 'cron must be a non-empty string';
  const fields = expr.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) {
    return `cron "${expr}" has ${fields} fields; use 5 (min hour day month weekday) or 6 (with seconds first)`;
  }
  try {
    CronExpressionParser.parse(expr, tz ? { tz } : {});
    return null;
  } catch (err) {
    return `cron "${expr}" is invalid: ${(err as Error).message}`;
  }
}

/** Milliseconds between the next two ticks of a cron expression (used for staleness rules). */
export function cronIntervalMs(expr: string, tz?: string, from = new Date()): number {
  const it = CronExpressionParser.parse(expr, { currentDate: from, ...(tz ? { tz } : {}) });
  const a = it.next().getTime();
  const b = it.next().getTime();
  return b - a;
}
