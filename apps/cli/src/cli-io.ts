import { createInterface } from 'node:readline/promises';

/**
 * Everything the CLI touches outside itself, so tests can run it in-process against a real server
 * and read exactly what a user would see.
 */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether a person is at a terminal to answer a confirmation prompt. */
  isInteractive: boolean;
  /** Asks one question on the terminal and returns the answer line. */
  prompt(question: string): Promise<string>;
  env: Record<string, string | undefined>;
  /** Aborts long-running commands (`events --follow`, `run --wait`): Ctrl-C in the real CLI. */
  signal: AbortSignal;
}

/**
 * The process's own terminal, stdout and stderr; Ctrl-C aborts a following or waiting command.
 *
 * The signal handlers are installed only when a command asks for `signal`: a handler makes Node
 * ignore a signal's default action, so one installed here would swallow a SIGTERM that reaches
 * `werkpilot worker` while it is still starting, before its graceful shutdown listens.
 */
export function processIo(): CliIo {
  let controller: AbortController | undefined;
  const abortSignal = () => {
    if (!controller) {
      const created = new AbortController();
      process.once('SIGINT', () => created.abort());
      process.once('SIGTERM', () => created.abort());
      controller = created;
    }
    return controller.signal;
  };
  // `werkpilot agents | head`: the reader went away, so stop quietly, as Unix tools do, instead of
  // dying on an unhandled EPIPE with a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    isInteractive: Boolean(process.stdin.isTTY && process.stderr.isTTY),
    prompt: async (question) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return await rl.question(question);
      } finally {
        rl.close();
      }
    },
    env: process.env,
    get signal() {
      return abortSignal();
    },
  };
}
