import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import { REPO_ROOT, WERKPILOT_BIN, startApp, uniquePrefix, waitFor } from '@werkpilot/test-support';

/**
 * What the processes print never holds a secret: `pnpm start` against a Redis with a password, and
 * a scheduler refusing a bad secret setting.
 */
const PASSWORD = 'correct-horse-battery-staple';
const children: ChildProcess[] = [];
afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
});

function run(command: string, args: string[], env: Record<string, string>): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(command, args, { cwd: REPO_ROOT, env: { ...process.env, LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let text = '';
  child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => text, exited };
}

describe('secrets in output', () => {
  it('`pnpm start` with a password in REDIS_URL logs the URL masked, and the password nowhere', async () => {
    const redisPort = await freePort();
    const redis = run('redis-server', ['--port', String(redisPort), '--save', '', '--appendonly', 'no', '--requirepass', PASSWORD], {});
    await waitFor(() => /Ready to accept connections/.test(redis.output()), { what: 'redis-server to start' });
    const port = await freePort();
    // `pnpm start` execs `werkpilot start` once the build is fresh.
    const start = run(WERKPILOT_BIN, ['start'], {
      REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${redisPort}/0`,
      WERKPILOT_PREFIX: uniquePrefix(),
      PORT: String(port),
      WORKER_HTTP_PORT: '0',
    });
    try {
      await waitFor(() => /dashboard on/.test(start.output()) && /worker online/.test(start.output()), {
        timeoutMs: 60_000,
        what: () => `pnpm start to come up; output:\n${start.output().slice(-2000)}`,
      });
      expect(start.output()).toContain(`using the Redis at redis://:***@127.0.0.1:${redisPort}/0`);
    } finally {
      start.child.kill('SIGINT');
      expect(await start.exited, start.output().slice(-2000)).toBe(0);
      redis.child.kill('SIGTERM');
      expect(await redis.exited).toBe(0);
    }
    expect(start.output()).not.toContain(PASSWORD);
  }, 90_000);

  it('a scheduler refusing a bad secret setting says which, not what it was', async () => {
    const scheduler = startApp('scheduler', { DASHBOARD_TOKEN: ' \t ', REDIS_URL: `redis//:${PASSWORD}@127.0.0.1:6379` });
    expect(await scheduler.exited).toBe(2);
    const lines = scheduler.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^werkpilot scheduler: REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL.*; DASHBOARD_TOKEN must be a non-empty string, got a value of 3 characters \(not shown: it is a secret\)$/,
    );
    expect(scheduler.output()).not.toContain(PASSWORD);
  });
});
