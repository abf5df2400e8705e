import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import { waitFor } from '@werkpilot/test-support';
import { composeCommand, run } from './tools.js';

/**
 * The compose stack for real: built, started, used and stopped through Docker. It needs a Docker
 * engine and the base images already present (`node:24-slim` to build, `redis:7` to run): it never
 * pulls. Elsewhere it reports itself skipped, with the reason, in one line.
 */

const BASE_IMAGES = ['node:24-slim', 'redis:7'];

function whyNot(): string | undefined {
  if (run('docker', ['info']).status !== 0) return 'no Docker engine answers `docker info`';
  if (!composeCommand()) return 'no docker compose';
  const missing = BASE_IMAGES.filter((image) => run('docker', ['image', 'inspect', image]).status !== 0);
  if (missing.length > 0) return `base images absent (${missing.join(', ')}); this test never pulls`;
  return undefined;
}

const skipReason = whyNot();
if (skipReason) console.warn(`SKIPPED: compose end-to-end: ${skipReason}`);

const project = `werkpilot-e2e-${randomBytes(3).toString('hex')}`;
const tag = `e2e-${randomBytes(3).toString('hex')}`;
const compose = composeCommand() ?? ['docker', 'compose'];

function composeRun(args: string[], env: Record<string, string> = {}) {
  return run(compose[0]!, [...compose.slice(1), '-p', project, '-f', 'docker-compose.yml', ...args], { env: { WERKPILOT_TAG: tag, ...env }, timeoutMs: 600_000 });
}

afterAll(() => {
  if (skipReason) return;
  composeRun(['down', '-v', '--remove-orphans']);
  run('docker', ['image', 'rm', `werkpilot:${tag}`]);
});

describe('docker compose, for real', () => {
  it.skipIf(skipReason !== undefined)('builds one image, runs the demo, drains workers on stop and ships no development package', async () => {
    const port = await freePort();
    const env = { SCHEDULER_PORT: String(port), DASHBOARD_TOKEN: 'e2e', WORKER_REPLICAS: '2' };
    const danglingBefore = run('docker', ['images', '-q', '--filter', 'dangling=true']).stdout.trim().split('\n').filter(Boolean).length;

    const up = composeRun(['up', '-d', '--build', 'redis', 'scheduler', 'worker'], env);
    expect(up.status, up.stderr).toBe(0);
    // The image is built once: no second build left a dangling copy behind.
    const danglingAfter = run('docker', ['images', '-q', '--filter', 'dangling=true']).stdout.trim().split('\n').filter(Boolean).length;
    expect(danglingAfter).toBe(danglingBefore);

    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/agents/crm-sync`).catch(() => undefined);
        return res?.ok && ((await res.json()) as { successes?: number }).successes! > 0;
      },
      { timeoutMs: 120_000, intervalMs: 1000, what: 'a completed demo run' },
    );

    const check = run('docker', ['run', '--rm', '--entrypoint', 'sh', `werkpilot:${tag}`, '-c', 'cd /app && sh deploy/check-production.sh']);
    expect(check.status, check.stderr).toBe(0);

    const stop = composeRun(['stop', 'worker', 'scheduler'], env);
    expect(stop.status, stop.stderr).toBe(0);
    const ids = composeRun(['ps', '-a', '-q', 'worker', 'scheduler'], env).stdout.trim().split('\n').filter(Boolean);
    expect(ids).toHaveLength(3);
    for (const id of ids) expect(run('docker', ['inspect', '-f', '{{.State.ExitCode}}', id]).stdout.trim(), id).toBe('0');
    const schedulerLog = composeRun(['logs', 'scheduler'], env).stdout;
    expect(schedulerLog).toMatch(/shutdown step 6\/6/);
    expect(schedulerLog).not.toMatch(/worker:offline|wait for running agents/);
  }, 900_000);
});
