import { InvalidInputError } from '../process/errors.js';

/**
 * A point in time as an operator writes it in a filter: an ISO 8601 time (`2025-01-31T00:00:00Z`)
 * or a span back from now (`90s`, `15m`, `2h`, `7d`). Relative spans are what one types at 3 a.m.
 * (`--since 2h`); ISO times are what a script or a link carries.
 */
const RELATIVE = /^(\d{1,6})(s|m|h|d)$/;
const ISO = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Whether `value` is a time `resolveInstant` reads. */
export function isInstant(value: string): boolean {
  return value.length <= 64 && (RELATIVE.test(value) || (ISO.test(value) && Number.isFinite(Date.parse(value))));
}

export const INSTANT_HINT = 'must be an ISO 8601 time such as 2025-01-31T00:00:00Z, or a span back from now such as 90s, 15m, 2h or 7d';

/** Epoch ms of `value` (see above), relative spans counted back from `now`. Throws InvalidInputError naming `param`. */
export function resolveInstant(value: string, now: number, param: string): number {
  const relative = RELATIVE.exec(value);
  if (relative) return now - Number(relative[1]) * UNIT_MS[relative[2] as keyof typeof UNIT_MS];
  if (!isInstant(value)) throw new InvalidInputError(`${param}: ${INSTANT_HINT}, got ${JSON.stringify(value.slice(0, 64))}`);
  return Date.parse(value);
}
