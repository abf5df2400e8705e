import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { oneLine } from './api-client.js';
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from './cli-error.js';
import type { CliIo } from './cli-io.js';
import { DEFAULT_URL } from './command-context.js';
import { registerAgentActions } from './commands/agent-actions.js';
import { registerAgents } from './commands/agents.js';
import { registerCancel } from './commands/cancel.js';
import { registerDlq } from './commands/dlq.js';
import { registerEvents } from './commands/events.js';
import { registerReport } from './commands/report.js';
import { registerRoles } from './commands/roles.js';
import { registerRun } from './commands/run.js';
import { registerRuns } from './commands/runs.js';
import { registerSchedule } from './commands/schedule.js';
import { registerShards } from './commands/shards.js';
import { registerStatus } from './commands/status.js';

const HELP_AFTER = `
Environment:
  WERKPILOT_URL     API base URL (default ${DEFAULT_URL}); --url overrides it
  WERKPILOT_TOKEN   bearer token, the server's DASHBOARD_TOKEN (DASHBOARD_TOKEN is read too);
                    --token or --token-file overrides it. Prefer it (or a token file) to --token,
                    whose value every user of the machine can read in the process list
  WERKPILOT_TOKEN_FILE  a file holding the token, e.g. a Docker or Kubernetes secret
  WERKPILOT_USER, WERKPILOT_PASSWORD   basic credentials when the server uses DASHBOARD_USER/DASHBOARD_PASSWORD

Exit codes:
  0  done
  1  failed: the API answered an error, the server is unreachable, a waited-for run did not
     succeed, or a confirmation was declined
  2  bad usage: unknown command or option, malformed argument, input the API rejected (400), or a
     destructive command (dlq purge, dlq delete) without --yes when there is no terminal

Examples:
  werkpilot worker                      (under systemd, pm2, Docker or Kubernetes: SIGTERM drains it)
  werkpilot status
  werkpilot run crm-sync --with-dependents --wait
  werkpilot boot crm-sync
  werkpilot pause daily-report && werkpilot resume daily-report
  werkpilot backfill daily-report --from 2025-03-01T00:00:00Z --to 2025-03-07T23:59:59Z
  werkpilot run invoice-export --data '{"order":42}' --idempotency-key order-42
  werkpilot dlq list --json | jq '.entries[].id'
  werkpilot runs --agent crm-sync --state failed --since 2h --match ECONNRESET
  werkpilot dlq groups && werkpilot dlq replay --agent crm-sync --since 2h --match ECONNRESET
  werkpilot events --follow --type 'agent:*'
`;

/**
 * The release, from this package's package.json (one level above src/ and dist/ alike). Not from
 * @werkpilot/shared's WERKPILOT_VERSION: importing that package's index would load BullMQ and the
 * rest for every command. Every workspace package carries the root's version (test/version.test.ts
 * in apps/scheduler holds them to it).
 */
const CLI_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The `werkpilot` command tree (commander), writing through `io` and throwing instead of exiting. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('werkpilot')
    .description('Run the Werkpilot processes, and operate a cluster through its HTTP API (the scheduler on port 3001).')
    .option('--url <url>', `API base URL (env WERKPILOT_URL, default ${DEFAULT_URL})`)
    .option('--token <token>', 'bearer token (env WERKPILOT_TOKEN or DASHBOARD_TOKEN; visible in ps: prefer those or --token-file)')
    .option('--token-file <path>', 'read the bearer token from this file (env WERKPILOT_TOKEN_FILE)')
    .option('--json', 'print JSON instead of tables (every command)')
    .version(CLI_VERSION, '-V, --version', 'print the release (the one /api/metrics and the image label show)')
    .showSuggestionAfterError(false)
    // `werkpilot run --help` lists --url, --token and --json too.
    .configureHelp({ showGlobalOptions: true })
    .exitOverride()
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text, write) => write(`${oneLine(text)}\n`),
    })
    .addHelpText('after', HELP_AFTER);
  registerRoles(program);
  registerStatus(program, io);
  registerAgents(program, io);
  registerShards(program, io);
  registerRun(program, io);
  registerRuns(program, io);
  registerAgentActions(program, io);
  registerSchedule(program, io);
  registerDlq(program, io);
  registerCancel(program, io);
  registerEvents(program, io);
  registerReport(program, io);
  return program;
}

/**
 * Runs the CLI on `argv` (the arguments after the program name) and returns its exit code.
 * Every failure is reported as one line on stderr; nothing calls process.exit, so tests run it
 * in-process.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  if (argv.length === 0) {
    io.stderr(program.helpInformation());
    return EXIT_USAGE;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has printed its message already; help and version are successes.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return EXIT_OK;
      if (err.code === 'commander.help') return EXIT_USAGE;
      return EXIT_USAGE;
    }
    if (err instanceof CliError) {
      io.stderr(`error: ${oneLine(err.message)}\n`);
      return err.exitCode;
    }
    io.stderr(`error: ${oneLine(err instanceof Error ? err.message : String(err))}\n`);
    return EXIT_FAILURE;
  }
}
