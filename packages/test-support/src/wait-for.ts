export interface WaitForOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /**
   * What is awaited, for the timeout message. A function is called only when the wait times out,
   * so output it quotes (a process's log, a page) is what there was at the failure, not at the start.
   */
  what?: string | (() => string);
}

/**
 * Polls `check` until it returns a truthy value (which is returned) or `timeoutMs` passes.
 * Tests wait for conditions, never for fixed sleeps.
 */
export async function waitFor<T>(check: () => T | Promise<T>, { timeoutMs = 10_000, intervalMs = 25, what = 'condition' }: WaitForOptions = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const described = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${described}${lastError ? `: ${(lastError as Error).message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
