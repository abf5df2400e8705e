import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import { REPO_ROOT } from './agents-dir.js';
import { freePort } from '@werkpilot/shared';
import { waitFor } from './wait-for.js';

/** A real scheduler or worker process started by a test. */
export interface AppProcess {
  readonly role: 'scheduler' | 'worker';
  readonly proc: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** JSON log lines parsed so far. */
  logs(): Record<string, unknown>[];
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code (or signal name) once it exits. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

const running = new Set<ChildProcess>();
afterAll(() => {
  for (const proc of running) if (proc.exitCode === null) proc.kill('SIGKILL');
});

/** The `werkpilot` binary as a user or a process manager runs it: pnpm's shim, which execs node. */
export const WERKPILOT_BIN = path.join(REPO_ROOT, 'node_modules', '.bin', 'werkpilot');

/**
 * Starts `werkpilot <app>` — the compiled binary, plain node, as production runs it; the PID is the
 * role's own process — with `env` added to this process's environment (LOG_LEVEL defaults to info,
 * pretty-printing off). vitest's global setup builds the binary first (vitest.build-setup.ts).
 */
export function startApp(app: 'scheduler' | 'worker', env: Record<string, string>): AppProcess {
  const proc = spawn(WERKPILOT_BIN, [app], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', WORKER_HTTP_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  let text = '';
  proc.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | string>((resolve) =>
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      resolve(code ?? signal ?? 'unknown');
    }),
  );
  const logs = () =>
    text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
  return {
    role: app,
    proc,
    output: () => text,
    logs,
    waitForLog: async (pattern, timeoutMs = 20_000) => {
      await waitFor(() => pattern.test(text), { timeoutMs, what: () => `log ${pattern} from ${app}; got:\n${text.slice(-2000)}` });
    },
    exited,
    kill: (signal = 'SIGTERM') => {
      proc.kill(signal);
    },
  };
}

/**
 * Sends `signal` (SIGTERM: a graceful stop) to every app, waits until all exited, and throws unless
 * each exited with code 0 — naming the app and quoting the end of its output. A stop that fails
 * is a finding, not noise to ignore.
 */
export async function stopApps(apps: AppProcess[], signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  for (const app of apps) app.kill(signal);
  const codes = await Promise.all(apps.map((app) => app.exited));
  const failed = apps.flatMap((app, i) => (codes[i] === 0 ? [] : [`${app.role} (pid ${app.proc.pid}) exited ${codes[i]} after ${signal}; its output ends:\n${app.output().slice(-1500)}`]));
  if (failed.length > 0) throw new Error(failed.join('\n---\n'));
}

/** A real scheduler and worker on one Redis and prefix, ready to serve HTTP. */
export interface AppCluster {
  scheduler: AppProcess;
  worker: AppProcess;
  /** The scheduler's base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** SIGTERM to both; resolves once both exited with code 0, throws otherwise (see stopApps). */
  stop(): Promise<void>;
}

/**
 * Starts a scheduler (on a free port) and a worker with `env`, and resolves once the scheduler
 * answers `/readyz`. `workerEnv` is added for the worker only.
 */
export async function startAppCluster(
  env: Record<string, string>,
  { workerEnv = {}, timeoutMs = 40_000 }: { workerEnv?: Record<string, string>; timeoutMs?: number } = {},
): Promise<AppCluster> {
  const port = await freePort();
  const scheduler = startApp('scheduler', { ...env, PORT: String(port) });
  const worker = startApp('worker', { ...env, ...workerEnv });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.ok, {
    timeoutMs,
    what: () => `scheduler ready; scheduler output:\n${scheduler.output().slice(-2000)}\nworker output:\n${worker.output().slice(-2000)}`,
  });
  return {
    scheduler,
    worker,
    url,
    stop: () => stopApps([worker, scheduler]),
  };
}

/** The PIDs of every process below `pid` (children, their children, ...), read from /proc. */
export function descendantsOf(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Field 4 of /proc/<pid>/stat is the parent PID; the command name before it may hold spaces.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    for (const [child, ppid] of parents) {
      if (ppid === parent && !found.includes(child)) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

/** Whether a process with this PID still exists (a zombie counts as gone). */
export function isRunning(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
