import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createKeys, createQueues, freePort } from '@werkpilot/shared';
import { REPO_ROOT, WERKPILOT_BIN, agentSource, descendantsOf, isRunning, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

/**
 * The supervisor's view: systemd, pm2, Docker and Kubernetes start one PID and signal that PID.
 * Whatever runs a role — the `werkpilot` binary, `pnpm worker` in development, `werkpilot start` —
 * SIGTERM to that PID drains it and exits 0, and nothing is left running afterwards.
 */

const redis = useTestRedis();

const agentsDir = writeAgentsDir({
  // TypeScript, so on Node 20 the worker registers tsx (and its esbuild service process).
  'three-seconds.ts': agentSource({ name: 'three-seconds', retry: { attempts: 1 } }, 'await new Promise((r) => setTimeout(r, 3000)); return { ok: true };'),
});

const TOKEN = 'process-manager-test';

function env(prefix: string, extra: Record<string, string> = {}): Record<string, string> {
  return { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, DASHBOARD_TOKEN: TOKEN, ...extra };
}

function agentsQueue(prefix: string) {
  return createQueues({ connection: redis.client(), keys: createKeys(prefix) }).agents;
}

function pidsLogged(text: string, msg: RegExp): number[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{') && msg.test(l))
    .map((l) => (JSON.parse(l) as { pid: number }).pid);
}

/** Everything below `app`'s PID while it runs, so the test can check afterwards that none survived. */
function processTree(app: AppProcess): number[] {
  return [app.proc.pid!, ...descendantsOf(app.proc.pid!)];
}

describe('SIGTERM to the main PID of the werkpilot binary', () => {
  it('worker: lets a 3 s run finish, exits 0 and leaves no process behind', async () => {
    const prefix = uniquePrefix();
    const queue = agentsQueue(prefix);
    const worker = startApp('worker', env(prefix));
    await worker.waitForLog(/worker online/);
    // The binary is the role: no wrapper, no loader process between the supervisor and the worker.
    expect(pidsLogged(worker.output(), /worker online/)).toEqual([worker.proc.pid]);
    const job = await queue.add('three-seconds', { agent: 'three-seconds', trigger: 'manual' }, { attempts: 1 });
    await waitFor(async () => (await queue.getJobState(job.id!)) === 'active', { timeoutMs: 20_000, what: 'the run active' });
    const tree = processTree(worker);

    process.kill(worker.proc.pid!, 'SIGTERM');
    expect(await worker.exited).toBe(0);
    expect(await queue.getJobState(job.id!)).toBe('completed');
    expect(worker.output()).toMatch(/shutdown step 6\/6/);
    await waitFor(() => tree.every((pid) => !isRunning(pid)), { timeoutMs: 5000, what: `no process left of ${tree.join(', ')}` });
  }, 60_000);

  it('scheduler: exits 0 and leaves no process behind while a worker runs a 3 s run, which still completes', async () => {
    const prefix = uniquePrefix();
    const queue = agentsQueue(prefix);
    const port = await freePort();
    const scheduler = startApp('scheduler', env(prefix, { PORT: String(port) }));
    const worker = startApp('worker', env(prefix));
    await Promise.all([scheduler.waitForLog(/dashboard on/), worker.waitForLog(/worker online/)]);
    expect(pidsLogged(scheduler.output(), /dashboard on/)).toEqual([scheduler.proc.pid]);
    const response = await fetch(`http://127.0.0.1:${port}/api/agents/three-seconds/run`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(202);
    const { runId } = (await response.json()) as { runId: string };
    await waitFor(async () => (await queue.getJobState(runId)) === 'active', { timeoutMs: 20_000, what: 'the run active' });
    const tree = processTree(scheduler);

    process.kill(scheduler.proc.pid!, 'SIGTERM');
    expect(await scheduler.exited).toBe(0);
    expect(scheduler.output()).toMatch(/shutdown step 6\/6/);
    // A scheduler logs its own steps, not a worker's.
    expect(scheduler.output()).not.toMatch(/worker:offline|wait for running agents/);
    await waitFor(() => tree.every((pid) => !isRunning(pid)), { timeoutMs: 5000, what: `no process left of ${tree.join(', ')}` });
    await waitFor(async () => (await queue.getJobState(runId)) === 'completed', { timeoutMs: 20_000, what: 'the run completed by the worker' });
    worker.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
  }, 60_000);

  it('stops a worker told to stop while it is still loading its agents, instead of ignoring the signal', async () => {
    const slowToLoad = writeAgentsDir({
      'slow.mjs': `import { defineAgent } from '@werkpilot/shared';
process.stdout.write('slow agent loading\\n');
await new Promise((resolve) => setTimeout(resolve, 4000));
export default defineAgent({ name: 'slow', async run() { return null; } });
`,
    });
    const worker = startApp('worker', env(uniquePrefix(), { WERKPILOT_AGENTS: slowToLoad }));
    await worker.waitForLog(/slow agent loading/);
    process.kill(worker.proc.pid!, 'SIGTERM');
    // Gone before the agent even finished loading; nothing swallowed the signal.
    const exit = await Promise.race([worker.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 3000))]);
    expect(exit).not.toBe('still running');
    expect(worker.output()).not.toMatch(/worker online/);
  }, 30_000);

  it('an idle worker is gone within a second', async () => {
    const worker = startApp('worker', env(uniquePrefix()));
    await worker.waitForLog(/worker online/);
    const tree = processTree(worker);
    const signalledAt = performance.now();
    process.kill(worker.proc.pid!, 'SIGTERM');
    expect(await worker.exited).toBe(0);
    const exitMs = performance.now() - signalledAt;
    console.log(`[measure] idle worker: ${Math.round(exitMs)} ms from SIGTERM to exit`);
    // The promise is under 1 s; the bound leaves room for a loaded machine.
    expect(exitMs).toBeLessThan(3000);
    await waitFor(() => tree.every((pid) => !isRunning(pid)), { timeoutMs: 5000, what: 'no process left' });
  }, 60_000);
});

/** Starts `pnpm <script>` in its own process group, as a terminal (or a process manager) would. */
function startPnpm(script: string, extraEnv: Record<string, string>) {
  const proc = spawn('pnpm', [script], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', WORKER_HTTP_PORT: '0', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let text = '';
  proc.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return { proc, output: () => text, exited };
}

describe('under pnpm (development)', () => {
  it('kill -TERM <pid of pnpm worker> drains the worker: exit 0, no ELIFECYCLE, no orphan', async () => {
    const pnpm = startPnpm('worker', env(uniquePrefix()));
    try {
      await waitFor(() => /worker online/.test(pnpm.output()), { timeoutMs: 40_000, what: `worker online; output:\n${pnpm.output()}` });
      const [workerPid] = pidsLogged(pnpm.output(), /worker online/);

      process.kill(pnpm.proc.pid!, 'SIGTERM');
      expect(await pnpm.exited).toBe(0);
      expect(pnpm.output()).toMatch(/shutdown complete in \d+ ms; exiting 0/);
      expect(pnpm.output()).not.toMatch(/ELIFECYCLE|Command failed/);
      await waitFor(() => !isRunning(workerPid!), { timeoutMs: 5000, what: `worker ${workerPid} gone` });
    } finally {
      if (pnpm.proc.exitCode === null) process.kill(-pnpm.proc.pid!, 'SIGKILL');
    }
  }, 60_000);

  it('Ctrl-C on pnpm start (SIGINT to the whole foreground group) stops both roles gracefully and exits 0', async () => {
    const pnpm = startPnpm('start', env(uniquePrefix(), { PORT: String(await freePort()) }));
    try {
      await waitFor(() => /dashboard on/.test(pnpm.output()) && /worker online/.test(pnpm.output()), {
        timeoutMs: 60_000,
        what: `scheduler and worker up; output:\n${pnpm.output()}`,
      });
      const roles = [...pidsLogged(pnpm.output(), /dashboard on/), ...pidsLogged(pnpm.output(), /worker online/)];

      // The terminal signals pnpm and `werkpilot start` together, and pnpm relays its copy: one
      // keypress, two SIGINTs, which must not count as the "second Ctrl-C" that stops at once.
      process.kill(-pnpm.proc.pid!, 'SIGINT');
      expect(await pnpm.exited).toBe(0);
      const output = pnpm.output();
      expect(output.match(/shutdown complete in \d+ ms; exiting 0/g)).toHaveLength(2);
      expect(output).not.toMatch(/ELIFECYCLE|Command failed|exiting now/);
      await waitFor(() => roles.every((pid) => !isRunning(pid)), { timeoutMs: 5000, what: 'no role left' });
    } finally {
      if (pnpm.proc.exitCode === null) process.kill(-pnpm.proc.pid!, 'SIGKILL');
    }
  }, 90_000);
});

describe('werkpilot start', () => {
  it('its children stop by themselves when it is killed (SIGKILL): nothing outlives it', async () => {
    const start = spawn(WERKPILOT_BIN, ['start'], {
      cwd: REPO_ROOT,
      env: { ...process.env, LOG_LEVEL: 'info', WORKER_HTTP_PORT: '0', ...env(uniquePrefix(), { PORT: String(await freePort()) }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let text = '';
    start.stdout.on('data', (c: Buffer) => (text += c.toString()));
    start.stderr.on('data', (c: Buffer) => (text += c.toString()));
    try {
      await waitFor(() => /dashboard on/.test(text) && /worker online/.test(text), { timeoutMs: 60_000, what: `both roles up; output:\n${text}` });
      const roles = [...pidsLogged(text, /dashboard on/), ...pidsLogged(text, /worker online/)];
      expect(roles).toHaveLength(2);

      start.kill('SIGKILL');
      await waitFor(() => roles.every((pid) => !isRunning(pid)), { timeoutMs: 20_000, what: `both roles gone; output:\n${text.slice(-2000)}` });
      expect(text.match(/shutting down on parent process exited/g)).toHaveLength(2);
    } finally {
      for (const pid of pidsLogged(text, /online|dashboard on/)) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
    }
  }, 90_000);
});
