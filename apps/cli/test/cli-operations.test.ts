import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeys, createQueues, triggerNightly } from '@werkpilot/shared';
import { agentSource, startAppCluster, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppCluster } from '@werkpilot/test-support';
import { runWerkpilot, type CliCall, type CliResult } from './cli-harness.js';

/**
 * The CLI against a real scheduler and worker on a real Redis: every command's table output,
 * its --json, its exit code, and its errors as one line.
 */

const redis = useTestRedis();
const TOKEN = 'cli-test-token';
const prefix = uniquePrefix();
let cluster: AppCluster | undefined;
let env: Record<string, string>;

const cli = (args: string[], call?: CliCall) => runWerkpilot(args, env, call);

function expectOneLineError(result: CliResult, code: number, pattern: RegExp): void {
  expect(result.code, `exit code; stderr: ${result.stderr}`).toBe(code);
  expect(result.stderr.endsWith('\n')).toBe(true);
  expect(result.stderr.trimEnd().split('\n'), result.stderr).toHaveLength(1);
  expect(result.stderr.trimEnd()).toMatch(pattern);
}

function json<T = unknown>(result: CliResult): T {
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as T;
}

beforeAll(async () => {
  const agentsDir = writeAgentsDir({
    // overlap 'queue': tests trigger these back to back and expect every run to execute.
    'alpha.ts': agentSource({ name: 'alpha', priority: 2, overlap: 'queue' }, 'return { echo: ctx.data ?? null };'),
    'beta.ts': agentSource({ name: 'beta', dependsOn: ['alpha'], overlap: 'queue' }, 'return { ok: true };'),
    'slow.ts': agentSource(
      { name: 'slow', timeoutMs: 60_000 },
      `await new Promise((resolve, reject) => {
         const timer = setTimeout(resolve, 30000);
         ctx.signal.addEventListener('abort', () => { clearTimeout(timer); reject(ctx.signal.reason); }, { once: true });
       });`,
    ),
  });
  cluster = await startAppCluster(
    { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, LOG_LEVEL: 'warn', DASHBOARD_TOKEN: TOKEN },
    { workerEnv: { WORKER_CONCURRENCY: '4' } },
  );
  env = { WERKPILOT_URL: cluster.url, WERKPILOT_TOKEN: TOKEN };
}, 60_000);

afterAll(() => cluster?.stop(), 60_000);

describe('status', () => {
  it('summarises leader, workers, queues, DLQ and agents; --json gives the same figures', async () => {
    const status = await waitFor(
      async () => {
        const s = json<{ workers: { live: number } | null; leader: { leaderId: string | null } | null; agents: { total: number } }>(await cli(['status', '--json']));
        return s.workers && s.workers.live >= 1 && s.leader?.leaderId ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'a live worker and an elected leader in `status --json`' },
    );
    expect(status.agents.total).toBe(3);

    const table = await cli(['status']);
    expect(table.code).toBe(0);
    expect(table.stderr).toBe('');
    expect(table.stdout).toMatch(/^API\s+http:\/\/127\.0\.0\.1:\d+$/m);
    expect(table.stdout).toMatch(/^Leader\s+\S+/m);
    expect(table.stdout).toMatch(/^Workers\s+1 live, \d+\/4 slots busy$/m);
    expect(table.stdout).toMatch(/^DLQ\s+/m);
    expect(table.stdout).toMatch(/^Agents\s+3 total/m);
  });
});

describe('agents', () => {
  it('lists every agent in a table, and as a JSON array', async () => {
    const table = await cli(['agents']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^AGENT\s+PRI\s+DEPTH\s+SCHEDULE\s+CONTROLS\s+ENABLED\s+HEALTH\s+CIRCUIT\s+SCORE\s+RUNS\s+FAILED\s+P50\s+P95\s+P99\s+LAST RUN$/);
    expect(
      lines
        .slice(1)
        .map((l) => l.split(/\s+/)[0])
        .sort(),
    ).toEqual(['alpha', 'beta', 'slow']);
    // Controls beyond the default (one run at a time, skip) show in one cell: beta queues its runs.
    expect(table.stdout).toMatch(/^beta\s+3\s+1\s+manual\s+1 queue\s+yes/m);
    expect(table.stdout).toMatch(/^slow\s+3\s+0\s+manual\s+-\s+yes/m);

    const agents = json<{ name: string; priority: number; dependencyDepth: number }[]>(await cli(['agents', '--json']));
    expect(agents.find((a) => a.name === 'alpha')).toMatchObject({ priority: 2, dependencyDepth: 0 });
  });

  it('shows where the agents live: one shard, the fleet prefix, every component', async () => {
    const table = await cli(['shards']);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^SHARD\s+PREFIX\s+SLOT\s+RUNS\/H\s+AGENTS\s+COMPONENTS$/);
    expect(lines[1]).toMatch(/^\s*0\*\s+\S+\s+\d+\s+[\d.]+\s+3\s+/);
    expect(lines.at(-1)).toBe('* the shard this scheduler serves (1 shard in all)');
    const view = json<{ count: number; served: number; shards: { agents: string[] }[] }>(await cli(['shards', '--json']));
    expect(view).toMatchObject({ count: 1, served: 0 });
    expect(view.shards[0]!.agents).toEqual(['alpha', 'beta', 'slow']);
  });

  it('shows one agent in detail; an unknown agent is exit 1 with one line', async () => {
    const detail = await cli(['agents', 'beta']);
    expect(detail.code).toBe(0);
    expect(detail.stdout).toMatch(/^Depends on\s+alpha$/m);
    expect(json<{ name: string; dependsOn: string[] }>(await cli(['agents', 'alpha', '--json']))).toMatchObject({ name: 'alpha', dependsOn: [] });

    expectOneLineError(await cli(['agents', 'nope']), 1, /^error: unknown agent nope$/);
    expectOneLineError(await cli(['agents', 'Bad Name!']), 2, /^error: agent: agent names look like/);
  });
});

describe('run', () => {
  it('queues a run and, with --wait, reports its success; --data reaches the agent', async () => {
    const queued = await cli(['run', 'alpha']);
    expect(queued.code).toBe(0);
    expect(queued.stdout).toMatch(/^queued run \S+ of alpha$/m);

    const waited = json<{ runId: string; results: { state: string; result: { outcome: string; result: unknown } }[] }>(
      await cli(['run', 'alpha', '--data', '{"invoice":42}', '--wait', '--json']),
    );
    expect(waited.results).toHaveLength(1);
    expect(waited.results[0]).toMatchObject({ state: 'completed', result: { outcome: 'success', result: { echo: { invoice: 42 } } } });

    const table = await cli(['run', 'alpha', '--wait']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^RUN\s+AGENT\s+OUTCOME/m);
    expect(table.stdout).toMatch(/\salpha\s+success\s/);
  });

  it('runs a pipeline with --with-dependents, dependents after their dependency', async () => {
    const result = json<{ pipelineId: string; results: { agent: string; state: string; timings: { startedAt: string; finishedAt: string } }[] }>(
      await cli(['run', 'alpha', '--with-dependents', '--wait', '--json']),
    );
    expect(result.pipelineId).toBeTruthy();
    const byAgent = Object.fromEntries(result.results.map((r) => [r.agent, r]));
    expect(Object.keys(byAgent).sort()).toEqual(['alpha', 'beta']);
    expect(byAgent.beta!.state, JSON.stringify(result.results)).toBe('completed');
    expect(byAgent.beta!.timings.finishedAt, JSON.stringify(result.results)).toBeTruthy();
    // (startedAt is BullMQ's first pick-up, before the dependent parks to wait; finishing is what orders them.)
    expect(Date.parse(byAgent.beta!.timings.finishedAt)).toBeGreaterThanOrEqual(Date.parse(byAgent.alpha!.timings.finishedAt));
    const table = await cli(['run', 'alpha', '--with-dependents', '--wait']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^queued pipeline \S+ \(2 runs\); waiting…$/m);
    expect(table.stdout).toMatch(/\sbeta\s+success\s/);
  });

  it('refuses bad --data before calling the API (exit 2), and an unknown agent (exit 1)', async () => {
    expectOneLineError(await cli(['run', 'alpha', '--data', '{not json']), 2, /^error: --data must be JSON/);
    expectOneLineError(await cli(['run', 'ghost']), 1, /^error: unknown agent ghost$/);
    expectOneLineError(await cli(['run', 'alpha', '--wait', '--timeout', 'soon']), 2, /--timeout must be a positive whole number/);
  });

  it('needs the token for operator actions: without it, exit 1 saying how to set it', async () => {
    const result = await cli(['run', 'alpha'], { env: { WERKPILOT_TOKEN: '', DASHBOARD_TOKEN: '' } });
    expectOneLineError(result, 1, /authentication required.*WERKPILOT_TOKEN/);
    // --token on the command line works as well as the environment.
    expect((await cli(['run', 'alpha', '--token', TOKEN], { env: { WERKPILOT_TOKEN: '' } })).code).toBe(0);
  });

  it('reads the token from --token-file or WERKPILOT_TOKEN_FILE, so it need not appear in the process list', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'werkpilot-token-'));
    try {
      const file = path.join(dir, 'token');
      writeFileSync(file, `${TOKEN}\n`, { mode: 0o600 });
      const noEnvToken = { WERKPILOT_TOKEN: '', DASHBOARD_TOKEN: '' };
      expect((await cli(['run', 'alpha', '--token-file', file], { env: noEnvToken })).code).toBe(0);
      expect((await cli(['run', 'alpha'], { env: { ...noEnvToken, WERKPILOT_TOKEN_FILE: file } })).code).toBe(0);
      // A flag wins over the environment.
      expect((await cli(['run', 'alpha', '--token-file', file], { env: { WERKPILOT_TOKEN: 'wrong' } })).code).toBe(0);

      expectOneLineError(await cli(['status', '--token-file', path.join(dir, 'missing')]), 2, /^error: --token-file \S+missing cannot be read: ENOENT$/);
      writeFileSync(path.join(dir, 'empty'), '\n');
      expectOneLineError(await cli(['status'], { env: { ...noEnvToken, WERKPILOT_TOKEN_FILE: path.join(dir, 'empty') } }), 2, /^error: WERKPILOT_TOKEN_FILE \S+empty is empty/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('enable, disable, circuit reset', () => {
  it('disables an agent (its runs are then skipped) and enables it again', async () => {
    const disabled = await cli(['disable', 'beta']);
    expect(disabled.code).toBe(0);
    expect(disabled.stdout).toBe('disabled beta\n');
    expect(json<{ name: string; enabled: boolean }[]>(await cli(['agents', '--json'])).find((a) => a.name === 'beta')?.enabled).toBe(false);

    const skipped = await cli(['run', 'beta', '--wait']);
    expectOneLineError(skipped, 1, /^error: run \S+ of beta skipped: .*disabled/);

    expect(json(await cli(['enable', 'beta', '--json']))).toEqual({ agent: 'beta', enabled: true });
    expect((await cli(['run', 'beta', '--wait'])).code).toBe(0);
  });

  it('resets a circuit', async () => {
    const reset = await cli(['circuit', 'reset', 'alpha']);
    expect(reset.code).toBe(0);
    expect(reset.stdout).toBe('reset the circuit of alpha\n');
    expect(json(await cli(['circuit', 'reset', 'alpha', '--json']))).toMatchObject({ agent: 'alpha', circuit: 'closed' });
    expectOneLineError(await cli(['circuit', 'reset', 'ghost']), 1, /unknown agent ghost/);
  });
});

describe('cancel', () => {
  it('aborts a running run on its worker; cancelling it again is exit 1', async () => {
    const { runId } = json<{ runId: string }>(await cli(['run', 'slow', '--json']));
    const stateOf = async () => {
      const res = await fetch(`${env.WERKPILOT_URL}/api/runs/${runId}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      return ((await res.json()) as { state: string }).state;
    };
    await waitFor(async () => (await stateOf()) === 'active', {
      timeoutMs: 20_000,
      what: 'the slow run to be active',
    });
    const cancelled = await cli(['cancel', runId, '--reason', 'operator test']);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(cancelled.stdout).toMatch(new RegExp(`^cancelling run ${runId} of slow: aborting on worker \\S+`));
    const again = await cli(['cancel', runId]);
    expect(again.code).toBe(1);
    expect(again.stderr.trimEnd().split('\n')).toHaveLength(1);

    expectOneLineError(await cli(['cancel', 'no-such-run']), 1, /^error: unknown run no-such-run$/);
  });
});

describe('events', () => {
  it('prints recent events, filtered by type; --json is an array of bus events', async () => {
    const events = json<{ type: string; agent?: string }[]>(await cli(['events', '--type', 'agent:completed', '--limit', '200', '--json']));
    expect(events.length).toBeGreaterThan(0);
    expect(new Set(events.map((e) => e.type))).toEqual(new Set(['agent:completed']));

    const text = await cli(['events', '--type', 'agent:*', '--agent', 'alpha']);
    expect(text.code).toBe(0);
    for (const line of text.stdout.trimEnd().split('\n')) expect(line).toMatch(/^\S+Z\s+agent:\S+\s+alpha\s/);
  });

  it('--follow streams new events until interrupted, one JSON object per line with --json', async () => {
    const stop = new AbortController();
    const following = cli(['events', '--follow', '--type', 'agent:completed', '--agent', 'alpha', '--json'], {
      signal: stop.signal,
      onOutput: (out) => {
        if (out.includes('"agent:completed"')) stop.abort();
      },
    });
    // Triggers until the stream (which only sees events after it connected) prints one.
    const triggered: string[] = [];
    await waitFor(
      async () => {
        triggered.push(json<{ runId: string }>(await cli(['run', 'alpha', '--json'])).runId);
        return stop.signal.aborted;
      },
      { timeoutMs: 20_000, intervalMs: 500, what: 'a streamed agent:completed event' },
    );
    const result = await following;
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    const streamed = lines.map((l) => JSON.parse(l) as { type: string; agent: string; data: { runId: string } });
    // Only what the filters let through, and only new events: runs this test queued after the stream opened.
    for (const event of streamed) {
      expect(event).toMatchObject({ type: 'agent:completed', agent: 'alpha' });
      expect(triggered).toContain(event.data.runId);
    }
  });
});

describe('report', () => {
  it('says when there is no report yet, then shows the nightly report, by date and as a list', async () => {
    expectOneLineError(await cli(['report']), 1, /^error: no nightly report yet/);
    expectOneLineError(await cli(['report', '--date', '31-05-2024']), 2, /--date must be a date like/);

    const queues = createQueues({ connection: redis.client(), keys: createKeys(prefix) });
    try {
      await triggerNightly(queues.system);
    } finally {
      await queues.close();
    }
    const report = await waitFor(
      async () => {
        const r = await cli(['report', '--json']);
        return r.code === 0 ? (JSON.parse(r.stdout) as { id: string; agents: Record<string, unknown> }) : undefined;
      },
      { timeoutMs: 30_000, what: 'the nightly report' },
    );
    expect(Object.keys(report.agents).sort()).toEqual(['alpha', 'beta', 'slow']);

    const table = await cli(['report']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^Nightly report ${report.id} `, 'm'));
    expect(table.stdout).toMatch(/^AGENT\s+SCORE\s+RUNS\s+FAIL %\s+P50\s+P95\s+P99\s+ADVICE$/m);
    expect(table.stdout).toMatch(/^alpha\s+\d+\s+\d+/m);

    expect(json<{ id: string }>(await cli(['report', '--date', report.id, '--json'])).id).toBe(report.id);
    expectOneLineError(await cli(['report', '--date', '1999-01-01']), 1, /^error: no report for 1999-01-01; kept: /);
    expect(json<{ id: string }[]>(await cli(['report', '--list', '--json'])).map((r) => r.id)).toContain(report.id);
  });
});
