import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * A file outside Redis that agents append one line to per run they execute: the ground truth the
 * failover tests compare Redis's records with, and their clock for "when did runs resume". Redis may
 * lose what a killed primary had not yet replicated; this file loses nothing.
 */
export interface RunLog {
  /** For the processes' RUN_LOG (the agents read it there). */
  readonly path: string;
  /** Every line so far, in the order the runs started. */
  runs(): RunLine[];
  /** The first run that started after `at` (of `agent`, if given). */
  firstRunAfter(at: number, agent?: string): RunLine | undefined;
  /** The last run that started at or before `at` (of `agent`, if given): with firstRunAfter, the longest gap. */
  lastRunUntil(at: number, agent?: string): RunLine | undefined;
  remove(): void;
}

export interface RunLine {
  agent: string;
  runId: string;
  /** When the run started (epoch ms, the worker's clock: the same machine as the test). */
  at: number;
}

/**
 * The statement an agent's `run` starts with to record itself; the agent file needs
 * {@link withRunLogImport} around its source.
 */
export const RUN_LOG_STATEMENT = "appendFileSync(process.env.RUN_LOG, ctx.agent + ' ' + ctx.runId + ' ' + Date.now() + '\\n');";

/** Agent module source with the import {@link RUN_LOG_STATEMENT} needs. */
export const withRunLogImport = (source: string) => `import { appendFileSync } from 'node:fs';\n${source}`;

/** A fresh, empty run log in the temp directory; `name` only makes it recognisable there. */
export function createRunLog(name: string): RunLog {
  const file = path.join(tmpdir(), `werkpilot-${name}-runs-${randomBytes(4).toString('hex')}.log`);
  writeFileSync(file, '');
  const runs = (): RunLine[] => {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return [];
    }
    return text
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [agent, runId, at] = line.split(' ');
        return { agent: agent!, runId: runId!, at: Number(at) };
      });
  };
  return {
    path: file,
    runs,
    firstRunAfter: (at, agent) => runs().find((r) => r.at > at && (agent === undefined || r.agent === agent)),
    lastRunUntil: (at, agent) => runs().findLast((r) => r.at <= at && (agent === undefined || r.agent === agent)),
    remove: () => rmSync(file, { force: true }),
  };
}
