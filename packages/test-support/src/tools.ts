import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';

/**
 * The programs some checks need besides Node and Redis (Chromium, promtool, docker-compose). A check
 * whose program is missing is skipped — `it.skipIf(isMissing(tool))` — so the summary line counts
 * it as skipped, never as a pass, and the file prints once why.
 *
 * `WERKPILOT_TEST_WITHOUT=chromium,promtool` hides installed programs, to see the suite as a machine
 * without them runs it (`all` hides every program found here).
 */
export interface Tool {
  readonly name: string;
  /** The executable's absolute path; undefined when it is missing or hidden. */
  readonly path: string | undefined;
  /** Why checks that need it cannot run here; undefined when it is there. */
  readonly missing: string | undefined;
}

export interface FindToolOptions {
  /** How to install it, for the skip message (`apt-get install prometheus`). */
  install: string;
  /** An environment variable that may name the executable instead (`CHROMIUM_PATH`). */
  pathVariable?: string;
  /** Other names it goes by on some systems (`chromium-browser`). */
  aliases?: string[];
}

const hidden = () =>
  new Set(
    (process.env.WERKPILOT_TEST_WITHOUT ?? '')
      .split(',')
      .map((t) => t.trim())
      .filter(Boolean),
  );

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Finds `name` the way a shell does: the first executable of that name on PATH (or its aliases). */
export function findTool(name: string, { install, pathVariable, aliases = [] }: FindToolOptions): Tool {
  const without = hidden();
  if (without.has(name) || without.has('all')) {
    return { name, path: undefined, missing: `${name} is hidden by WERKPILOT_TEST_WITHOUT=${process.env.WERKPILOT_TEST_WITHOUT}` };
  }
  const override = pathVariable ? process.env[pathVariable] : undefined;
  if (override) {
    return isExecutableFile(override) ? { name, path: override, missing: undefined } : { name, path: undefined, missing: `${pathVariable}=${override} is not an executable file` };
  }
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const candidate of [name, ...aliases]) {
    for (const dir of dirs) {
      const file = path.join(dir, candidate);
      if (isExecutableFile(file)) return { name, path: file, missing: undefined };
    }
  }
  return { name, path: undefined, missing: `${name} is not on PATH (install: ${install})` };
}

const noted = new Set<string>();

/** Prints a reason once per test file, on stderr, where the run's output shows it. */
export function noteSkipped(reason: string): void {
  if (noted.has(reason)) return;
  noted.add(reason);
  console.warn(`SKIPPED: ${reason}`);
}

/** Whether `tool` is missing here; when it is, says once why the checks that need it are skipped. */
export function isMissing(tool: Tool): boolean {
  if (tool.missing) noteSkipped(`the checks that need ${tool.name}: ${tool.missing}`);
  return tool.missing !== undefined;
}
