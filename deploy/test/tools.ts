import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findTool, noteSkipped } from '@werkpilot/test-support';

/** The repository root and the deploy directory, for tests of the deployment files. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEPLOY_DIR = path.join(REPO_ROOT, 'deploy');

export interface ToolResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command synchronously from the repository root. */
export function run(command: string, args: string[], options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): ToolResult {
  const result = spawnSync(command, args, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 60_000,
  });
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/**
 * Whether `command` is on the PATH — found as every test finds its tools (test-support's findTool,
 * which honours WERKPILOT_TEST_WITHOUT) — and answers `--version` (or `versionArgs`).
 */
export function hasTool(command: string, versionArgs: string[] = ['--version']): boolean {
  const tool = findTool(command, { install: command });
  if (!tool.path) return false;
  const result = spawnSync(tool.path, versionArgs, { encoding: 'utf8', timeout: 20_000 });
  return result.status === 0;
}

/**
 * How to run Compose here: Debian's `docker-compose` (v1, no engine needed for `config`), else the
 * `docker compose` plugin; undefined when neither is installed.
 */
export function composeCommand(): string[] | undefined {
  if (hasTool('docker-compose', ['version'])) return ['docker-compose'];
  if (hasTool('docker', ['compose', 'version'])) return ['docker', 'compose'];
  return undefined;
}

/** A clear line for a skipped check, printed once per file: why `tool` cannot be used here. */
export function warnMissing(tool: string, install: string): void {
  noteSkipped(`the checks that need ${tool}: ${findTool(tool, { install }).missing ?? `${tool} is on PATH but does not answer (install: ${install})`}`);
}
