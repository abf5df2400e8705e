export { freePort } from '@werkpilot/shared';
import type { CliIo } from '../src/cli-io.js';
import { runCli } from '../src/program.js';

/** What one CLI invocation printed and returned. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Questions the CLI asked on the (pretend) terminal. */
  prompts: string[];
}

export interface CliCall {
  env?: Record<string, string>;
  /** Whether a person is at a terminal (confirmation prompts are possible). */
  isInteractive?: boolean;
  /** The answer typed at each prompt. */
  answer?: string;
  signal?: AbortSignal;
  /** Called with the output so far each time the CLI prints (to react to streamed lines). */
  onOutput?: (stdout: string) => void;
}

/** Runs the CLI in-process, exactly as `werkpilot <args>` would, and captures what a user sees. */
export async function runWerkpilot(args: string[], baseEnv: Record<string, string>, call: CliCall = {}): Promise<CliResult> {
  const result: CliResult = { code: -1, stdout: '', stderr: '', prompts: [] };
  const io: CliIo = {
    stdout: (text) => {
      result.stdout += text;
      call.onOutput?.(result.stdout);
    },
    stderr: (text) => {
      result.stderr += text;
    },
    isInteractive: call.isInteractive ?? false,
    prompt: async (question) => {
      result.prompts.push(question);
      return call.answer ?? '';
    },
    env: { ...baseEnv, ...call.env },
    signal: call.signal ?? new AbortController().signal,
  };
  result.code = await runCli(args, io);
  return result;
}
