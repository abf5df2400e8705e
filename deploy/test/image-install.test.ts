import { freePort } from '@werkpilot/shared';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';
import { REPO_ROOT, run } from './tools.js';

/**
 * What the container image holds, without a Docker engine: the workspace is copied as the build
 * context would be, deploy/install-production.sh (the Dockerfile's own install step) installs
 * production dependencies only, the compiled output is added as the Dockerfile copies it from its
 * build stage (here: this checkout's, which vitest's global setup built), and the image's entry
 * point and HEALTHCHECK script then start and probe a scheduler and a worker — the compiled
 * `werkpilot` binary on plain node — with a user's agent directory, and run the CLI.
 */

/** The compiled output the Dockerfile copies from its build stage. */
const DIST_DIRS = ['packages/shared/dist', 'apps/worker/dist', 'apps/scheduler/dist', 'apps/cli/dist'];

const redis = useTestRedis();

let home: string;
const children: ChildProcess[] = [];

/** The environment the image sets (Dockerfile ENV), pointed at the copied workspace. */
function imageEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? tmpdir(),
    NODE_ENV: 'production',
    NODE_OPTIONS: '--expose-gc',
    WERKPILOT_HOME: home,
    LOG_LEVEL: 'info',
    ...extra,
  };
}

function entrypoint(args: string[], env: Record<string, string>): ChildProcess & { output: () => string } {
  const child = spawn('sh', [path.join(home, 'deploy', 'docker-entrypoint.sh'), ...args], { cwd: home, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  children.push(child);
  return Object.assign(child, { output: () => text });
}

function exitOf(child: ChildProcess): Promise<number | string> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
}

beforeAll(() => {
  home = mkdtempSync(path.join(tmpdir(), 'werkpilot-image-'));
  // The build context, as .dockerignore shapes it: sources and manifests, no node_modules, tests or docs.
  const entries = ['package.json', 'pnpm-lock.yaml', 'pnpm-workspace.yaml', '.npmrc', '.pnpmfile.cjs', 'apps', 'packages', 'examples', 'deploy'];
  if (existsSync(path.join(REPO_ROOT, 'bench', 'package.json'))) entries.push('bench/package.json');
  const copy = run('sh', ['-c', `tar --exclude=node_modules --exclude=test --exclude='*.test.ts' --exclude=dist -cf - ${entries.join(' ')} | tar -xf - -C "${home}"`]);
  expect(copy.status, copy.stderr).toBe(0);
  const install = run('sh', ['deploy/install-production.sh'], {
    cwd: home,
    env: { CI: 'true', npm_config_manage_package_manager_versions: 'false' },
  });
  expect(install.status, `${install.stdout}\n${install.stderr}`).toBe(0);
  const dist = run('sh', ['-c', `tar -cf - ${DIST_DIRS.join(' ')} | tar -xf - -C "${home}"`]);
  expect(dist.status, dist.stderr).toBe(0);
  // An operator's own agents, mounted outside the workspace packages (compose mounts /app/agents).
  mkdirSync(path.join(home, 'agents'));
  writeFileSync(
    path.join(home, 'agents', 'hello.ts'),
    `import { defineAgent } from '@werkpilot/shared/agent';
export default defineAgent({ name: 'hello', schedule: { cron: '* * * * * *' }, async run() { return { greeted: true }; } });
`,
  );
}, 120_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  if (home) rmSync(home, { recursive: true, force: true });
});

describe('the production image contents', () => {
  it('ship no development tools, and the production check catches one that slips in', () => {
    const packages = readdirSync(path.join(home, 'node_modules', '.pnpm'));
    for (const tool of ['typescript', 'vitest', 'vite', 'rollup', 'chai', 'playwright-core', 'testcontainers']) {
      expect(
        packages.filter((p) => p.startsWith(`${tool}@`)),
        tool,
      ).toEqual([]);
    }
    expect(existsSync(path.join(home, 'packages/test-support/node_modules'))).toBe(false);
    expect(run('sh', ['deploy/check-production.sh'], { cwd: home }).status).toBe(0);

    const planted = path.join(home, 'node_modules', '.pnpm', 'vitest@3.2.7');
    mkdirSync(planted);
    try {
      const check = run('sh', ['deploy/check-production.sh'], { cwd: home });
      expect(check.status).toBe(1);
      expect(check.stderr).toMatch(/development packages were installed: vitest;/);
    } finally {
      rmSync(planted, { recursive: true });
    }
  });

  it('start a scheduler and a worker through the entry point, pass the HEALTHCHECK, run the CLI and stop gracefully', async () => {
    const [port, workerPort] = [await freePort(), await freePort()];
    const common = {
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: uniquePrefix(),
      WERKPILOT_AGENTS: path.join(home, 'agents'),
      DASHBOARD_TOKEN: 'image-test-token',
    };
    const schedulerEnv = imageEnv({ ...common, PORT: String(port), WERKPILOT_ROLE_FILE: path.join(home, 'role-scheduler') });
    const workerEnv = imageEnv({ ...common, WORKER_HTTP_PORT: String(workerPort), WERKPILOT_ROLE_FILE: path.join(home, 'role-worker') });
    const scheduler = entrypoint(['scheduler'], schedulerEnv);
    const worker = entrypoint(['worker'], workerEnv);

    const healthcheck = (env: Record<string, string>) => run(process.execPath, [path.join(home, 'deploy', 'healthcheck.mjs')], { env });
    await waitFor(() => healthcheck(schedulerEnv).status === 0, { timeoutMs: 45_000, what: () => `scheduler healthy; output:\n${scheduler.output()}` });
    await waitFor(() => healthcheck(workerEnv).status === 0, { timeoutMs: 45_000, what: () => `worker healthy; output:\n${worker.output()}` });
    // The entry point execs the compiled binary on plain node: no loader, no process in between.
    for (const app of [scheduler, worker]) {
      const commandLine = readFileSync(`/proc/${app.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      expect(commandLine.slice(1)).toEqual([path.join(home, 'apps/cli/bin/werkpilot.js'), app === scheduler ? 'scheduler' : 'worker']);
    }
    // The worker's HEALTHCHECK asks WORKER_HTTP_PORT: nothing listening there is unhealthy.
    const dead = healthcheck({ ...workerEnv, WORKER_HTTP_PORT: String(await freePort()) });
    expect(dead.status).toBe(1);
    expect(dead.stdout).toMatch(/worker \/healthz on port \d+ did not answer/);

    // The user's agent, importing @werkpilot/shared from outside the workspace packages, runs.
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/agents/hello`, { headers: { authorization: 'Bearer image-test-token' } });
        return res.ok && ((await res.json()) as { successes?: number }).successes! > 0;
      },
      { timeoutMs: 30_000, what: () => `a successful run of the mounted agent; worker output:\n${worker.output()}` },
    );

    const cli = entrypoint(['werkpilot', 'status', '--json'], imageEnv({ WERKPILOT_URL: `http://127.0.0.1:${port}`, WERKPILOT_TOKEN: 'image-test-token' }));
    expect(await exitOf(cli), cli.output()).toBe(0);
    const status = JSON.parse(cli.output()) as { workers: { live: number } | null; agents: { total: number } };
    expect(status.agents.total).toBe(1);
    expect(status.workers?.live).toBe(1);

    // `exec` in the entry point makes node the process that gets Docker's SIGTERM.
    worker.kill('SIGTERM');
    scheduler.kill('SIGTERM');
    expect(await exitOf(worker), worker.output().slice(-2000)).toBe(0);
    expect(await exitOf(scheduler), scheduler.output().slice(-2000)).toBe(0);
  }, 180_000);
});
