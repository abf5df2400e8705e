import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import { waitFor } from '@werkpilot/test-support';
import { composeCommand, run } from './tools.js';

/**
 * The compose stack for real: started, used and stopped through Docker, on the werkpilot image
 * already built (`docker compose build`, or `docker build -f deploy/Dockerfile -t werkpilot .`) and
 * a `redis:7` image already present: it never builds or pulls. Elsewhere it reports itself skipped,
 * with the reason, in one line.
 */

const TAG = process.env.WERKPILOT_TAG ?? 'latest';
const IMAGES = [`werkpilot:${TAG}`, 'redis:7'];

function whyNot(): string | undefined {
  if (run('docker', ['info']).status !== 0) return 'no Docker engine answers `docker info`';
  if (!composeCommand()) return 'no docker compose';
  const missing = IMAGES.filter((image) => run('docker', ['image', 'inspect', image]).status !== 0);
  if (missing.length > 0) return `images absent (${missing.join(', ')}); this test never builds or pulls`;
  return undefined;
}

const skipReason = whyNot();
if (skipReason) console.warn(`SKIPPED: compose end-to-end: ${skipReason}`);

const project = `werkpilot-e2e-${randomBytes(3).toString('hex')}`;
const compose = composeCommand() ?? ['docker', 'compose'];

function composeRun(args: string[], env: Record<string, string> = {}) {
  return run(compose[0]!, [...compose.slice(1), '-p', project, '-f', 'docker-compose.yml', ...args], { env: { WERKPILOT_TAG: TAG, ...env }, timeoutMs: 300_000 });
}

afterAll(() => {
  if (skipReason) return;
  composeRun(['down', '-v', '--remove-orphans']);
});

describe('docker compose, for real', () => {
  it.skipIf(skipReason !== undefined)(
    'runs the demo on WORKER_REPLICAS workers, drains them on stop, refuses a mistyped agents directory, ships no development package',
    async () => {
      const port = await freePort();
      const env = { SCHEDULER_PORT: String(port), DASHBOARD_TOKEN: 'e2e', WORKER_REPLICAS: '2' };
      const auth = { authorization: 'Bearer e2e' };

      const mistyped = composeRun(['up', '-d', 'redis', 'scheduler', 'worker'], { ...env, WERKPILOT_AGENTS_DIR: './no-such-agents' });
      expect(mistyped.status).not.toBe(0);
      expect(mistyped.stderr).toMatch(/no-such-agents/);

      const up = composeRun(['up', '-d', 'redis', 'scheduler', 'worker'], env);
      expect(up.status, up.stderr).toBe(0);
      const metrics = await waitFor(
        async () => {
          // Bounded: Docker's port proxy can hold a connection open while the scheduler is not listening yet.
          const res = await fetch(`http://127.0.0.1:${port}/api/metrics`, { headers: auth, signal: AbortSignal.timeout(5000) }).catch(() => undefined);
          const body = res?.ok ? ((await res.json()) as { agents: Record<string, { successes: number }>; system: { workers: unknown[] } }) : undefined;
          return body && body.agents['crm-sync']!.successes > 0 && body.system.workers.length === 2 ? body : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 1000, what: 'a completed demo run and two live workers' },
      );
      expect(metrics.system.workers).toHaveLength(2);

      const check = run('docker', ['run', '--rm', '--entrypoint', 'sh', `werkpilot:${TAG}`, '-c', 'cd /app && sh deploy/check-production.sh']);
      expect(check.status, check.stderr).toBe(0);

      const stop = composeRun(['stop', 'worker', 'scheduler'], env);
      expect(stop.status, stop.stderr).toBe(0);
      const ids = composeRun(['ps', '-a', '-q', 'worker', 'scheduler'], env).stdout.trim().split('\n').filter(Boolean);
      expect(ids).toHaveLength(3);
      for (const id of ids) expect(run('docker', ['inspect', '-f', '{{.State.ExitCode}}', id]).stdout.trim(), id).toBe('0');
      const schedulerLog = composeRun(['logs', 'scheduler'], env).stdout;
      expect(schedulerLog).toMatch(/shutdown step 6\/6/);
      expect(schedulerLog).not.toMatch(/worker:offline|wait for running agents/);
    },
    900_000,
  );
});
