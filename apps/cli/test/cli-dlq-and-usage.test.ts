import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, agentSource, startAppCluster, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppCluster } from '@werkpilot/test-support';
import { freePort, runWerkpilot, type CliCall, type CliResult } from './cli-harness.js';

/**
 * The dead-letter queue commands (with their confirmations), usage errors, and the real `werkpilot`
 * bin and `pnpm werkpilot` as processes: exit codes 0 / 1 / 2 as documented.
 */

const redis = useTestRedis();
const TOKEN = 'cli-dlq-token';
let cluster: AppCluster | undefined;
let env: Record<string, string>;

const cli = (args: string[], call?: CliCall) => runWerkpilot(args, env, call);

function expectOneLineError(result: CliResult, code: number, pattern: RegExp): void {
  expect(result.code, `exit code; stderr: ${result.stderr}`).toBe(code);
  expect(result.stderr.trimEnd().split('\n'), result.stderr).toHaveLength(1);
  expect(result.stderr.trimEnd()).toMatch(pattern);
}

interface DlqPage {
  total: number;
  entries: { id: string; agent: string; error: string }[];
}
const dlqPage = async (): Promise<DlqPage> => {
  const result = await cli(['dlq', 'list', '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as DlqPage;
};

/** Fails `broken` `n` times; each run goes straight to the DLQ (one attempt; overlap 'queue', so retried runs all run). */
async function deadLetter(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const result = await cli(['run', 'broken', '--wait']);
    expectOneLineError(result, 1, /^error: run \S+ of broken failed: boom: upstream answered 503$/);
  }
}

beforeAll(async () => {
  const agentsDir = writeAgentsDir({
    'broken.ts': agentSource({ name: 'broken', retry: { attempts: 1 }, overlap: 'queue' }, "throw new Error('boom: upstream answered 503');"),
    'fine.ts': agentSource({ name: 'fine' }, 'return 1;'),
  });
  cluster = await startAppCluster({ REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, LOG_LEVEL: 'warn', DASHBOARD_TOKEN: TOKEN });
  env = { WERKPILOT_URL: cluster.url, WERKPILOT_TOKEN: TOKEN };
}, 60_000);

afterAll(() => cluster?.stop(), 60_000);

describe('dlq', () => {
  it('lists dead-lettered runs newest first, pages them, and shows one with its error and stack', async () => {
    const empty = await cli(['dlq', 'list']);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toBe('(the dead-letter queue is empty)\n');

    await deadLetter(3);
    const page = await dlqPage();
    expect(page.total).toBe(3);
    expect(page.entries.map((e) => e.agent)).toEqual(['broken', 'broken', 'broken']);

    const table = await cli(['dlq', 'list', '--limit', '2']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+AGENT\s+FAILED\s+ATTEMPTS\s+TRIGGER\s+ERROR$/);
    expect(lines[1]).toMatch(new RegExp(`^${page.entries[0]!.id}\\s+broken\\s+\\d+s ago\\s+1\\s+manual\\s+boom: upstream answered 503$`));
    expect(lines.at(-1)).toBe('1-2 of 3 (more: --offset 2)');

    const shown = await cli(['dlq', 'show', page.entries[0]!.id]);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/^Error\s+boom: upstream answered 503$/m);
    expect(shown.stdout).toMatch(/^Stack trace \(last attempt\)\nError: boom: upstream answered 503/m);
    expect(JSON.parse((await cli(['dlq', 'show', page.entries[0]!.id, '--json'])).stdout)).toMatchObject({ agent: 'broken', attemptsMade: 1 });
    expectOneLineError(await cli(['dlq', 'show', '999999']), 1, /^error: unknown run 999999$/);
    expectOneLineError(await cli(['dlq', 'list', '--limit', 'lots']), 2, /--limit must be a positive whole number/);
  });

  it('retries one run or all of them; they fail again into the DLQ', async () => {
    const before = await dlqPage();
    const id = before.entries[0]!.id;
    const one = await cli(['dlq', 'retry', id]);
    expect(one.code).toBe(0);
    expect(one.stdout).toBe(`retried run ${id}\n`);
    await waitFor(async () => (await dlqPage()).entries.some((e) => e.id === id) && (await dlqPage()).total === before.total, {
      timeoutMs: 20_000,
      what: 'the retried run to fail again',
    });

    expectOneLineError(await cli(['dlq', 'retry']), 2, /^error: dlq retry needs a run id, or --all$/);
    expectOneLineError(await cli(['dlq', 'retry', id, '--all']), 2, /not both/);
    const all = await cli(['dlq', 'retry', '--all', '--json']);
    expect(JSON.parse(all.stdout)).toEqual({ retried: before.total });
    await waitFor(async () => (await dlqPage()).total === before.total, { timeoutMs: 20_000, what: 'every retried run back in the DLQ' });
  });

  it('deletes only after confirmation: refused without a terminal, declined, or confirmed', async () => {
    const { entries, total } = await dlqPage();
    const id = entries[0]!.id;
    const refused = await cli(['dlq', 'delete', id]);
    expectOneLineError(refused, 2, /^error: refusing to delete dead-lettered run \S+ without --yes \(no terminal to confirm on\)$/);
    const declined = await cli(['dlq', 'delete', id], { isInteractive: true, answer: 'n' });
    expectOneLineError(declined, 1, /^error: aborted: did not delete/);
    expect(declined.prompts).toEqual([`delete dead-lettered run ${id}? [y/N] `]);
    expect((await dlqPage()).total).toBe(total);

    const confirmed = await cli(['dlq', 'delete', id], { isInteractive: true, answer: 'y' });
    expect(confirmed.code).toBe(0);
    expect(confirmed.stdout).toBe(`deleted run ${id}\n`);
    expect((await dlqPage()).total).toBe(total - 1);
  });

  it('purges only with --yes or a confirmation on a terminal', async () => {
    const { total } = await dlqPage();
    expect(total).toBeGreaterThan(0);
    expectOneLineError(await cli(['dlq', 'purge']), 2, /^error: refusing to delete every dead-lettered run without --yes/);
    expectOneLineError(await cli(['dlq', 'purge'], { isInteractive: true, answer: '' }), 1, /aborted/);
    expect((await dlqPage()).total).toBe(total);

    const purged = await cli(['dlq', 'purge', '--yes', '--json']);
    expect(JSON.parse(purged.stdout)).toEqual({ deleted: total });
    expect((await dlqPage()).total).toBe(0);
    await deadLetter(1);
    const confirmed = await cli(['dlq', 'purge'], { isInteractive: true, answer: 'yes' });
    expect(confirmed.stdout).toBe('deleted 1 dead-lettered run\n');
  });
});

describe('usage', () => {
  it('answers bad usage with exit 2 and one line', async () => {
    expectOneLineError(await cli(['statsu']), 2, /^error: unknown command 'statsu'$/);
    expectOneLineError(await cli(['agents', '--colour']), 2, /^error: unknown option '--colour'$/);
    expectOneLineError(await cli(['run']), 2, /^error: missing required argument 'agent'$/);
    expectOneLineError(await cli(['status', '--url', 'ftp://x']), 2, /^error: --url must be an http:\/\/ or https:\/\/ URL/);
    const none = await cli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^Usage: werkpilot/);
  });

  it('documents commands and exit codes in --help (exit 0)', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    for (const command of ['status', 'agents', 'run', 'enable', 'disable', 'circuit', 'dlq', 'cancel', 'events', 'report']) {
      expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    }
    expect(help.stdout).toMatch(/Exit codes:\n\s+0\s+done\n\s+1\s+failed.*[\s\S]*\n\s+2\s+bad usage/);
    const runHelp = await cli(['run', '--help']);
    expect(runHelp.stdout).toMatch(/--with-dependents/);
    expect(runHelp.stdout).toMatch(/--wait/);
  });

  it('says in one line when the server cannot be reached (exit 1)', async () => {
    const port = await freePort();
    expectOneLineError(
      await cli(['status'], { env: { WERKPILOT_URL: `http://127.0.0.1:${port}` } }),
      1,
      new RegExp(`^error: cannot reach the werkpilot API at http://127.0.0.1:${port}: ECONNREFUSED`),
    );
  });
});

describe('the werkpilot bin and `pnpm werkpilot`', () => {
  function spawnCli(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(command, args, {
        cwd: REPO_ROOT,
        env: { ...process.env, ...env, NODE_OPTIONS: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  }
  const bin = path.join(REPO_ROOT, 'apps', 'cli', 'bin', 'werkpilot.js');

  it('exits 0 with JSON, 2 for a purge without --yes off a terminal, 1 for an unknown agent', async () => {
    const ok = await spawnCli(process.execPath, [bin, 'agents', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((JSON.parse(ok.stdout) as { name: string }[]).map((a) => a.name).sort()).toEqual(['broken', 'fine']);

    const refused = await spawnCli(process.execPath, [bin, 'dlq', 'purge']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe('error: refusing to delete every dead-lettered run without --yes (no terminal to confirm on)\n');

    const missing = await spawnCli(process.execPath, [bin, 'enable', 'ghost']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('error: unknown agent ghost\n');
  });

  it('runs as `pnpm werkpilot`', async () => {
    const status = await spawnCli('pnpm', ['-s', 'werkpilot', 'status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ agents: { total: 2 } });
  });
});
