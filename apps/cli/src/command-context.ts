import type { Command } from 'commander';
import { ApiClient } from './api-client.js';
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
  json?: boolean;
}

/** Builds the context from the command's options merged with the program's (global) ones. */
export function contextOf(command: Command, io: CliIo): CommandContext {
  const opts = command.optsWithGlobals<GlobalOptions>();
  const env = io.env;
  const api = new ApiClient({
    url: opts.url ?? env.WERKPILOT_URL ?? DEFAULT_URL,
    token: opts.token ?? env.WERKPILOT_TOKEN ?? env.DASHBOARD_TOKEN,
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


/** Wraps an action so it receives the context first, then its arguments and its own options. */
export function withContext<A extends unknown[]>(
  io: CliIo,
  action: (ctx: CommandContext, ...args: A) => Promise<void>,
): (...commanderArgs: unknown[]) => Promise<void> {
  return async (...commanderArgs) => {
    // commander passes the positional arguments, then the options object, then the command.
    const command = commanderArgs[commanderArgs.length - 1] as Command;
    await action(contextOf(command, io), ...(commanderArgs.slice(0, -1) as A));
  };
}
