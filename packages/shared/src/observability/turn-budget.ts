import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Splits long synchronous work into event-loop turns of a few milliseconds: call `yieldIfDue()`
 * between small units of work; it yields (setImmediate) once the current turn has run for
 * `budgetMs`, so timers, I/O and the leader's lease renewal keep their turn during a big build.
 */
export interface TurnBudget {
  yieldIfDue(): Promise<void> | undefined;
}

export const DEFAULT_TURN_BUDGET_MS = 3;

export function turnBudget(budgetMs = DEFAULT_TURN_BUDGET_MS): TurnBudget {
  let turnStartedAt = performance.now();
  return {
    yieldIfDue() {
      if (performance.now() - turnStartedAt < budgetMs) return undefined;
      return nextTurn().then(() => {
        turnStartedAt = performance.now();
      });
    },
  };
}
