import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, useTestRedis } from '@werkpilot/test-support';
import type { ResultsFile } from '../src/results-file.js';
import { SCENARIOS } from '../src/scenario-list.js';

const redis = useTestRedis();
const outDir = mkdtempSync(path.join(tmpdir(), 'werkpilot-bench-test-'));
afterAll(() => rmSync(outDir, { recursive: true, force: true }));

/** Runs `pnpm bench` the way users do (tsx bench/src/main.ts) with extra arguments. */
function runBench(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'bench/src/main.ts'), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, REDIS_URL: redis.url, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('pnpm bench --quick', () => {
  // Asserts the shape of the results, never the speed: speed belongs to the benchmark itself.
  it('writes every scenario with numeric figures to the results file and prints the table', async () => {
    const out = path.join(outDir, 'latest.json');
    const { code, stdout, stderr } = await runBench(['--quick', '--out', out]);
    expect(code, `bench failed:\n${stdout}\n${stderr.slice(-3000)}`).toBe(0);

    const results = JSON.parse(readFileSync(out, 'utf8')) as ResultsFile;
    expect(results.mode).toBe('quick');
    expect(results.errors).toEqual([]);
    expect(results.commit).toMatch(/^[0-9a-f]{40}$|^unknown/);
    expect(Number.isNaN(Date.parse(results.date))).toBe(false);
    expect(results.node).toBe(process.version);
    expect(results.redis.version).toMatch(/^\d+\.\d+/);

    for (const scenario of SCENARIOS) {
      const rows = results.results.filter((r) => r.scenario === scenario.name);
      // A scenario this machine cannot run (the cluster one without redis-cli) says why instead.
      const skip = results.skipped.find((s) => s.scenario === scenario.name);
      if (skip) {
        expect(rows).toEqual([]);
        expect(stdout).toContain(`SKIPPED ${scenario.name}: ${skip.reason}`);
        continue;
      }
      expect(rows.length, `rows of ${scenario.name}`).toBeGreaterThan(0);
      for (const row of rows) {
        expect(Number.isFinite(row.value), `${scenario.name} / ${row.metric} value`).toBe(true);
        expect(row.unit).not.toBe('');
        if (row.baseline !== null) {
          expect(Number.isFinite(row.baseline), `${scenario.name} / ${row.metric} baseline`).toBe(true);
          expect(row.ratio === null || Number.isFinite(row.ratio)).toBe(true);
        }
      }
      expect(stdout).toContain(`| ${scenario.name}`);
    }
  }, 150_000);

  it('skips the cluster scenario with its reason, and exit code 0, when redis-cli is missing', async () => {
    const out = path.join(outDir, 'without-redis-cli.json');
    const { code, stdout, stderr } = await runBench(['--quick', '--only', 'cluster', '--out', out], { WERKPILOT_TEST_WITHOUT: 'redis-cli' });
    expect(code, `bench failed:\n${stdout}\n${stderr.slice(-3000)}`).toBe(0);
    const results = JSON.parse(readFileSync(out, 'utf8')) as ResultsFile;
    expect(results.skipped).toEqual([{ scenario: 'cluster', reason: 'redis-cli is hidden by WERKPILOT_TEST_WITHOUT=redis-cli' }]);
    expect(results.results).toEqual([]);
    expect(results.errors).toEqual([]);
    expect(stdout).toContain('SKIPPED cluster: redis-cli is hidden by WERKPILOT_TEST_WITHOUT=redis-cli');
  });

  it('refuses an unknown scenario with a one-line error and exit code 2', async () => {
    const { code, stderr } = await runBench(['--only', 'no-such-scenario']);
    expect(code).toBe(2);
    expect(stderr).toContain('--only: unknown scenario "no-such-scenario"');
  });
});
