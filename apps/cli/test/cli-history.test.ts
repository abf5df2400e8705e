import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentSource, startAppCluster, uniquePrefix, useTestRedis, writeAgentsDir, type AppCluster } from '@werkpilot/test-support';
import { runWerkpilot, type CliCall, type CliResult } from './cli-harness.js';

/** `werkpilot runs` (run search) and `werkpilot dlq groups|replay|delete` by selection, against the real processes. */

const redis = useTestRedis();
const TOKEN = 'cli-history-token';
let cluster: AppCluster | undefined;
let env: Record<string, string>;

const cli = (args: string[], call?: CliCall) => runWerkpilot(args, env, call);

function expectOneLineError(result: CliResult, code: number, pattern: RegExp): void {
  expect(result.code, `exit code; stderr: ${result.stderr}`).toBe(code);
  expect(result.stderr.trimEnd().split('\n'), result.stderr).toHaveLength(1);
  expect(result.stderr.trimEnd()).toMatch(pattern);
}

/** Runs `agent` with `--wait`, returning its run id (from `--json`). */
async function runOnce(agent: string, data?: unknown): Promise<{ id: string; code: number }> {
  const result = await cli(['run', agent, '--wait', '--json', ...(data === undefined ? [] : ['--data', JSON.stringify(data)])]);
  const id = (JSON.parse(result.stdout) as { runId: string }).runId;
  return { id, code: result.code };
}

beforeAll(async () => {
  const agentsDir = writeAgentsDir({
    'flappy.ts': agentSource(
      { name: 'flappy', retry: { attempts: 1 }, overlap: 'queue' },
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the agent's source code, written to a file; its template literal is evaluated there
      'const d = ctx.data ?? {}; if (d.fail) throw new Error(`${d.fail} after ${d.ms ?? 17} ms at 0x${(d.at ?? 255).toString(16)}`); return { ok: true };',
    ),
    'fine.ts': agentSource({ name: 'fine' }, 'return 1;'),
  });
  cluster = await startAppCluster({ REDIS_URL: redis.url, WERKPILOT_PREFIX: uniquePrefix(), WERKPILOT_AGENTS: agentsDir, LOG_LEVEL: 'warn', DASHBOARD_TOKEN: TOKEN });
  env = { WERKPILOT_URL: cluster.url, WERKPILOT_TOKEN: TOKEN };
}, 60_000);

afterAll(() => cluster?.stop(), 60_000);

describe('runs', () => {
  it('finds runs by agent, state and text, pages them, and refuses bad filters with exit 2', async () => {
    const fines = [(await runOnce('fine')).id, (await runOnce('fine')).id, (await runOnce('fine')).id];
    const reset = await runOnce('flappy', { fail: 'read ECONNRESET' });
    expect(reset.code).toBe(1);

    const table = await cli(['runs', '--match', 'econnreset']);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+AGENT\s+STATE\s+TRIGGER\s+ENDED\s+DURATION\s+ATTEMPTS\s+ERROR$/);
    expect(lines.slice(1)).toHaveLength(1);
    expect(lines[1]).toMatch(new RegExp(`^${reset.id}\\s+flappy\\s+failed\\s+manual\\s+\\d+s ago\\s+\\S+\\s+1\\s+read ECONNRESET after 17 ms at 0xff$`));

    const json = JSON.parse((await cli(['runs', '--agent', 'fine', '--state', 'completed', '--json'])).stdout) as { runs: { id: string }[]; next: null };
    expect(json.runs.map((r) => r.id).sort()).toEqual([...fines].sort());
    expect(json.next).toBeNull();

    const first = await cli(['runs', '--agent', 'fine', '--limit', '2']);
    const more = /^more \(\d+ runs examined\): --cursor (\S+)$/m.exec(first.stdout);
    expect(more, first.stdout).not.toBeNull();
    const second = JSON.parse((await cli(['runs', '--agent', 'fine', '--limit', '2', '--cursor', more![1]!, '--json'])).stdout) as { runs: { id: string }[]; next: string | null };
    expect(second.runs).toHaveLength(1);
    expect(second.next).toBeNull();

    expect((await cli(['runs', '--until', '2020-01-01T00:00:00Z'])).stdout).toBe('(no run matches)\n');
    expectOneLineError(await cli(['runs', '--state', 'exploded']), 2, /^error: query\.state\.0: each state must be one of active/);
    expectOneLineError(await cli(['runs', '--since', 'last tuesday']), 2, /^error: query\.since: must be an ISO 8601 time/);
    expectOneLineError(await cli(['runs', '--limit', '0']), 2, /--limit must be a positive whole number/);
  });
});

describe('dlq by cause', () => {
  it('groups failures by signature, replays a selection after showing its count, and deletes by group', async () => {
    await cli(['dlq', 'purge', '--yes']);
    const resets = [(await runOnce('flappy', { fail: 'read ECONNRESET', ms: 12, at: 4096 })).id, (await runOnce('flappy', { fail: 'read ECONNRESET', ms: 9000, at: 17 })).id];
    const quota = (await runOnce('flappy', { fail: 'quota exceeded', ms: 1 })).id;

    const table = await cli(['dlq', 'groups']);
    expect(table.code, table.stderr).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^GROUP\s+AGENT\s+COUNT\s+FIRST\s+LAST\s+SIGNATURE$/);
    expect(lines[1]).toMatch(/^[0-9a-f]{12}\s+flappy\s+2\s+\d+s ago\s+\d+s ago\s+read ECONNRESET after <n> ms at <hex>$/);
    expect(lines[2]).toMatch(/^[0-9a-f]{12}\s+flappy\s+1\s+\d+s ago\s+\d+s ago\s+quota exceeded after <n> ms at <hex>$/);
    const groups = JSON.parse((await cli(['dlq', 'groups', '--json'])).stdout) as { groups: { id: string; runIds: string[] }[] };

    // Without a terminal and without --yes: refused, nothing replayed.
    expectOneLineError(
      await cli(['dlq', 'replay', '--agent', 'flappy', '--since', '2h', '--match', 'ECONNRESET']),
      2,
      /^error: refusing to replay 2 dead-lettered runs \(agent flappy, since 2h, match ECONNRESET\) without --yes/,
    );
    const declined = await cli(['dlq', 'replay', '--agent', 'flappy', '--since', '2h', '--match', 'ECONNRESET'], { isInteractive: true, answer: 'n' });
    expectOneLineError(declined, 1, /aborted/);
    expect(declined.prompts).toEqual(['replay 2 dead-lettered runs (agent flappy, since 2h, match ECONNRESET)? [y/N] ']);

    const replayed = await cli(['dlq', 'replay', '--agent', 'flappy', '--since', '2h', '--match', 'ECONNRESET'], { isInteractive: true, answer: 'y' });
    expect(replayed.code, replayed.stderr).toBe(0);
    expect(replayed.stdout).toMatch(/^replayed 2 dead-lettered runs: /);
    expect(replayed.stdout.trim().split(': ')[1]!.split(' ').sort()).toEqual([...resets].sort());

    expect((await cli(['dlq', 'replay', '--match', 'no such error', '--yes'])).stdout).toBe('no dead-lettered run matches (match no such error)\n');
    expectOneLineError(await cli(['dlq', 'replay']), 2, /^error: dlq replay needs a selection .*dlq retry --all$/);
    expectOneLineError(await cli(['dlq', 'replay', '--group', 'xyz', '--yes']), 2, /^error: query\.group: group ids are 12 hex digits/);
    expectOneLineError(await cli(['dlq', 'delete', quota, '--agent', 'flappy']), 2, /not both/);

    const quotaGroup = groups.groups.find((g) => g.runIds.includes(quota))!;
    const deleted = await cli(['dlq', 'delete', '--group', quotaGroup.id, '--yes', '--json']);
    expect(JSON.parse(deleted.stdout)).toEqual({ deleted: 1, runIds: [quota] });
  });
});
