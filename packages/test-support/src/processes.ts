import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll } from 'vitest';
import { REPO_ROOT } from './agents-dir.js';
import { freePort } from '@werkpilot/shared';
import { waitFor } from './wait-for.js';

/** A real scheduler or worker process started by a test. */
export interface AppProcess {
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

/**
 * Starts `apps/<app>/src/main.ts` through tsx, as `pnpm scheduler` / `pnpm worker` do, with `env`
 * added to this process's environment (LOG_LEVEL defaults to info, pretty-printing off).
 */
export function startApp(app: 'scheduler' | 'worker', env: Record<string, string>): AppProcess {
  const entry = path.join(REPO_ROOT, 'apps', app, 'src', 'main.ts');
  const proc = spawn(process.execPath, ['--import', 'tsx', entry], {
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
    proc,
    output: () => text,
    logs,
    waitForLog: async (pattern, timeoutMs = 20_000) => {
      await waitFor(() => pattern.test(text), { timeoutMs, what: `log ${pattern} from ${app}; got:\n${text.slice(-2000)}` });
    },
    exited,
    kill: (signal = 'SIGTERM') => {
      proc.kill(signal);
    },
  };
}

/** A real scheduler and worker on one Redis and prefix, ready to serve HTTP. */
export interface AppCluster {
  scheduler: AppProcess;
  worker: AppProcess;
  /** The scheduler's base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  /** SIGTERM to both; resolves once both exited. */
  stop(): Promise<void>;
}

/**
 * Starts a scheduler (on a free port) and a worker with `env`, and resolves once the scheduler
 * answers `/readyz`. `workerEnv` is added for the worker only.
 */
export async function startAppCluster(env: Record<string, string>, { workerEnv = {}, timeoutMs = 40_000 }: { workerEnv?: Record<string, string>; timeoutMs?: number } = {}): Promise<AppCluster> {
  const port = await freePort();
  const scheduler = startApp('scheduler', { ...env, PORT: String(port) });
  const worker = startApp('worker', { ...env, ...workerEnv });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.ok, {
    timeoutMs,
    what: `scheduler ready; output:\n${scheduler.output()}`,
  });
  return {
    scheduler,
    worker,
    url,
    stop: async () => {
      for (const app of [worker, scheduler]) app.kill('SIGTERM');
      await Promise.all([worker.exited, scheduler.exited]);
    },
  };
}
