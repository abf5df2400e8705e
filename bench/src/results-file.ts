import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import type { ResultRow } from './measurement.js';

/** What `bench/results/latest.json` holds. */
export interface ResultsFile {
  commit: string;
  /** Whether the working tree had uncommitted changes (the figures are then of that tree). */
  dirty: boolean;
  date: string;
  node: string;
  redis: { version: string; hz: number };
  mode: 'quick' | 'full';
  machine: { cpus: number; model: string; loadAverageAtStart: number[] };
  results: ResultRow[];
  /** Scenarios that threw, with the message; their rows are missing. */
  errors: { scenario: string; error: string }[];
  /** Scenarios that could not run on this machine (ScenarioSkippedError), with the reason; no rows. */
  skipped: { scenario: string; reason: string }[];
}

export function describeCheckout(repoRoot: string): { commit: string; dirty: boolean } {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no') !== '' };
  } catch {
    return { commit: 'unknown (not a git checkout)', dirty: false };
  }
}

export function describeMachine(): ResultsFile['machine'] {
  const list = cpus();
  return { cpus: list.length, model: list[0]?.model ?? 'unknown', loadAverageAtStart: loadavg().map((n) => Math.round(n * 100) / 100) };
}

export function writeResults(file: string, results: ResultsFile): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
}
