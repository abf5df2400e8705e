/**
 * Exit codes of the `werkpilot` CLI, documented in its help and in the README:
 *   0  the command did what was asked
 *   1  it failed: the API answered an error (unknown agent or run, read-only, server error), the
 *      server could not be reached, a waited-for run failed, or a confirmation was declined
 *   2  bad usage: unknown command or option, a malformed argument (e.g. --data that is not JSON),
 *      input the API rejected as invalid (HTTP 400), or a destructive command without --yes when
 *      there is no terminal to ask on
 */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** An error the CLI reports as one line on stderr, exiting with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The command line itself is wrong; exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
  }
}
