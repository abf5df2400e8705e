/**
 * A `*`-only glob (`agent:*`, `*:failed`, `circuit:*ed`): `*` matches any run of characters,
 * everything else matches itself. Patterns come from anonymous HTTP clients (event filters), so
 * matching never builds a regular expression: a regex made from `*****…X` backtracks
 * catastrophically and froze the event loop.
 *
 * Matching is greedy and linear: the text before the first `*` must start the subject, the text
 * after the last `*` must end it, and each literal segment in between is found left to right with
 * `indexOf`, starting where the previous one ended. Taking the leftmost occurrence of each middle
 * segment is always right for `*`-only globs (it leaves the most room for the segments after it),
 * so no position is ever revisited: O(subject + pattern).
 */
export interface Glob {
  /** The pattern as given. */
  readonly pattern: string;
  matches(subject: string): boolean;
}

export function compileGlob(pattern: string): Glob {
  const segments = pattern.split('*');
  if (segments.length === 1) return { pattern, matches: (subject) => subject === pattern };
  const head = segments[0]!;
  const tail = segments[segments.length - 1]!;
  // Consecutive stars leave empty segments, which match anywhere: drop them.
  const middle = segments.slice(1, -1).filter((s) => s.length > 0);
  const minLength = head.length + tail.length + middle.reduce((n, s) => n + s.length, 0);
  return {
    pattern,
    matches(subject) {
      if (subject.length < minLength || !subject.startsWith(head) || !subject.endsWith(tail)) return false;
      let from = head.length;
      const end = subject.length - tail.length;
      for (const segment of middle) {
        const at = subject.indexOf(segment, from);
        if (at < 0 || at + segment.length > end) return false;
        from = at + segment.length;
      }
      return true;
    },
  };
}
