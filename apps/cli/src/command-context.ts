import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
import { UsageError } from './cli-error.js';
import type { CliIo } from './cli-io.js';

export const DEFAULT_URL = 'http://localhost:3001';

/** What every command's action gets: the API client, the output mode and the terminal. */
export interface CommandContext {
  io: CliIo;
  api: ApiClient;
  /** `--json`: print machine-readable JSON instead of tables. */
  isJson: boolean;
  /** Prints human-readable text (tables, summaries). */
  print(text: string): void;
  /** Prints one JSON document (pretty, so `jq` and people both read it). */
  printJson(value: unknown): void;
}

/** The global options, wherever on the line they were given. */
interface GlobalOptions {
  url?: string;
  token?: string;
  tokenFile?: string;
  json?: boolean;
}

/** Builds the context from the command's options merged with the program's (global) ones. */
export function contextOf(command: Command, io: CliIo): CommandContext {
  const opts = command.optsWithGlobals<GlobalOptions>();
  const env = io.env;
  const api = new ApiClient({
    url: opts.url ?? env.WERKPILOT_URL ?? DEFAULT_URL,
    token: tokenOf(opts, env),
    user: env.WERKPILOT_USER ?? env.DASHBOARD_USER,
    password: env.WERKPILOT_PASSWORD ?? env.DASHBOARD_PASSWORD,
  });
  const isJson = Boolean(opts.json);
  return {
    io,
    api,
    isJson,
    print: (text) => io.stdout(text.endsWith('\n') ? text : `${text}\n`),
    printJson: (value) => io.stdout(`${JSON.stringify(value, null, 2)}\n`),
  };
}

/**
 * The bearer token, first found of: `--token`, `--token-file`, WERKPILOT_TOKEN,
 * WERKPILOT_TOKEN_FILE, DASHBOARD_TOKEN. A flag's value is visible to every user of the machine
 * (`ps`), so the environment or a file (e.g. a Docker or Kubernetes secret) is the better place.
 */
function tokenOf(opts: GlobalOptions, env: Record<string, string | undefined>): string | undefined {
  if (opts.token) return opts.token;
  if (opts.tokenFile) return readTokenFile(opts.tokenFile, '--token-file');
  if (env.WERKPILOT_TOKEN) return env.WERKPILOT_TOKEN;
  if (env.WERKPILOT_TOKEN_FILE) return readTokenFile(env.WERKPILOT_TOKEN_FILE, 'WERKPILOT_TOKEN_FILE');
  return env.DASHBOARD_TOKEN || undefined;
}

/** The token in `path`: its content without surrounding whitespace (editors end files with a newline). */
function readTokenFile(path: string, what: string): string {
  let content: string;
  try {
    content = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`${what} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const token = content.trim();
  if (token === '') throw new UsageError(`${what} ${path} is empty; put the server's DASHBOARD_TOKEN in it`);
  if (/\s/.test(token)) throw new UsageError(`${what} ${path} holds more than one word; put only the server's DASHBOARD_TOKEN in it`);
  return token;
}

/** Wraps an action so it receives the context first, then its arguments and its own options. */
export function withContext<A extends unknown[]>(io: CliIo, action: (ctx: CommandContext, ...args: A) => Promise<void>): (...commanderArgs: unknown[]) => Promise<void> {
  return async (...commanderArgs) => {
    // commander passes the positional arguments, then the options object, then the command.
    const command = commanderArgs[commanderArgs.length - 1] as Command;
    await action(contextOf(command, io), ...(commanderArgs.slice(0, -1) as A));
  };
}
