import { CliError, UsageError } from './cli-error.js';
import type { CliIo } from './cli-io.js';

/**
 * Guards a destructive command. `--yes` proceeds; on a terminal the user is asked (default no);
 * without a terminal (scripts, CI) the command refuses with exit code 2, so nothing is deleted by a
 * script that forgot to say so.
 */
export async function confirmDestructive(io: CliIo, what: string, hasYes: boolean): Promise<void> {
  if (hasYes) return;
  if (!io.isInteractive) {
    throw new UsageError(`refusing to ${what} without --yes (no terminal to confirm on)`);
  }
  const answer = (await io.prompt(`${what}? [y/N] `)).trim().toLowerCase();
  if (answer !== 'y' && answer !== 'yes') throw new CliError(`aborted: did not ${what}`);
}
