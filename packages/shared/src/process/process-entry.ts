import { WerkpilotError } from './errors.js';

/**
 * Runs a process's main function. A startup problem the user can fix (bad configuration, an invalid
 * registry, no Redis) prints its message — one line, or the registry's list — and exits with the
 * error's code (2); anything else prints one line and exits 1. No stack trace reaches the user
 * unless LOG_LEVEL is debug or trace.
 */
export function runProcess(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${name}: ${message}\n`);
    if (['debug', 'trace'].includes(process.env.LOG_LEVEL ?? '') && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
    process.exit(err instanceof WerkpilotError ? err.exitCode : 1);
  });
}
