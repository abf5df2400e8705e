/**
 * Why a run is skipped, as a typed value between modules: the gate's rules, run admission, the
 * executor and the boot all pass `SkipReason`s, so nothing re-parses a sentence to learn which
 * dependency a reason is about. People read `text` (`disabled`, `dependency crm-sync disabled`);
 * the one string form (a run record's `error`, the job's finished value, a blocked boot state's
 * `reason`) is made and read here only.
 */

/** One reason to skip a run. `dependency` names the dependency it is about, if any. */
export interface SkipReason {
  readonly text: string;
  readonly dependency?: string;
}

/** A reason about the run's own agent: `disabled`, `overlap`, `circuit open`. */
export function skipReason(text: string): SkipReason {
  return { text };
}

/** A dependency problem, worded the way every rule reports it: `dependency crm-sync disabled`. */
export function dependencySkipReason(dependency: string, problem: string): SkipReason {
  return { text: `dependency ${dependency} ${problem}`, dependency };
}

/** What people read: the texts, in order. */
export function skipReasonTexts(reasons: readonly SkipReason[]): string[] {
  return reasons.map((r) => r.text);
}

/** The reasons, once each by text, first occurrence first. */
export function uniqueSkipReasons(reasons: Iterable<SkipReason>): SkipReason[] {
  const seen = new Map<string, SkipReason>();
  for (const reason of reasons) if (!seen.has(reason.text)) seen.set(reason.text, reason);
  return [...seen.values()];
}

/**
 * The dependencies the reasons name, once each: what a skipped run's completion counts in its
 * agent's skip causes (for the nightly report's advice).
 */
export function skipCausesOf(reasons: readonly SkipReason[]): string[] {
  const causes: string[] = [];
  for (const { dependency } of reasons) if (dependency !== undefined && !causes.includes(dependency)) causes.push(dependency);
  return causes;
}

const SEPARATOR = '; ';
const DEPENDENCY_TEXT = /^dependency (\S+) /;

/** The one-string form people see where a single value is shown (run record `error`, blocked boot `reason`). */
export function joinSkipReasons(reasons: readonly SkipReason[]): string {
  return skipReasonTexts(reasons).join(SEPARATOR);
}

/**
 * Reads back a stored one-string form (a blocked boot state's `reason`, a record's `error`): the
 * counterpart of joinSkipReasons, kept beside it so the wording is known in one module.
 */
export function splitSkipReasons(joined: string): SkipReason[] {
  return joined
    .split(SEPARATOR)
    .filter(Boolean)
    .map((text) => {
      const dependency = DEPENDENCY_TEXT.exec(text)?.[1];
      return dependency === undefined ? { text } : { text, dependency };
    });
}
