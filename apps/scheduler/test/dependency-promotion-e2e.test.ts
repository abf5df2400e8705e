import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';
import { FILE_SIGNALS, processCluster } from './_process-cluster.js';

/**
 * Same-tick dependency waits with the real scheduler planning every second and three worker
 * processes of one slot each: d depends on a and b, and a and b of each tick wait for each other
 * before finishing — which, with one slot per worker, they can do only on two different workers.
 * dependency-waits.test.ts proves the same race inside one process.
 */

const redis = useTestRedis();
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-e2e-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const dependency = (name: string, partner: string) => `import { defineAgent } from '@werkpilot/shared';
${FILE_SIGNALS}
export default defineAgent({
  name: '${name}',
  schedule: { cron: '* * * * * *' },
  timeoutMs: 60000,
  async run(ctx) {
    const tick = ctx.runId.split(':').at(-1);
    mark('arrived-${name}-' + tick);
    await until('arrived-${partner}-' + tick, ctx.signal);
    note('finish ${name} ' + tick + ' ' + Date.now() + ' ' + process.pid);
    return null;
  },
});
`;

const agentsDir = writeAgentsDir({
  'a.ts': dependency('a', 'b'),
  'b.ts': dependency('b', 'a'),
  'd.ts': `import { defineAgent } from '@werkpilot/shared';
${FILE_SIGNALS}
export default defineAgent({
  name: 'd',
  schedule: { cron: '* * * * * *' },
  dependsOn: ['a', 'b'],
  async run(ctx) { note('start d ' + ctx.runId.split(':').at(-1) + ' ' + Date.now() + ' ' + process.pid); return null; },
});
`,
});

describe('dependency waits across worker processes', () => {
  it("starts each tick's dependent exactly once, after both dependencies finished together on different workers", async () => {
    const dir = mkdtempSync(path.join(scratch, 'promotion-'));
    const cluster = await processCluster(redis, agentsDir, { E2E_DIR: dir });
    // A short grace: at the end a tick's dependency may be waiting for its partner, which is aborted.
    await cluster.startWorkers(3, { WORKER_CONCURRENCY: '1', SHUTDOWN_GRACE_MS: '2000' });
    await cluster.startScheduler();
    const lines = () => {
      try {
        return readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n').filter(Boolean);
      } catch {
        return [];
      }
    };
    /** tick -> agent -> the [time, pid] of each finish (a, b) or start (d) logged for it. */
    const byTick = () => {
      const ticks = new Map<string, Map<string, [number, number][]>>();
      for (const line of lines()) {
        const [, agent, tick, at, pid] = line.split(' ');
        const agents = ticks.get(tick!) ?? new Map<string, [number, number][]>();
        agents.set(agent!, [...(agents.get(agent!) ?? []), [Number(at), Number(pid)]]);
        ticks.set(tick!, agents);
      }
      return ticks;
    };
    const TICKS = 8;
    // The first ticks whose two dependencies both finished; each must then see its d start.
    const ticks = await waitFor(
      () => {
        const done = [...byTick()].filter(([, agents]) => agents.has('a') && agents.has('b')).map(([tick]) => tick);
        return done.length >= TICKS ? done.slice(0, TICKS) : undefined;
      },
      { timeoutMs: 60_000, what: () => `${TICKS} ticks with both dependencies finished; log:\n${lines().slice(-30).join('\n')}` },
    );
    await waitFor(() => ticks.every((tick) => byTick().get(tick)!.has('d')), {
      timeoutMs: 20_000,
      what: () => `d to start for ticks ${ticks.join(', ')} (a lost promotion hangs here); log:\n${lines().slice(-30).join('\n')}`,
    });
    const seen = byTick();
    for (const tick of ticks) {
      const agents = seen.get(tick)!;
      const [[aAt, aPid], [bAt, bPid], dStarts] = [agents.get('a')![0]!, agents.get('b')![0]!, agents.get('d')!];
      expect(aPid, `tick ${tick}: a and b on different workers`).not.toBe(bPid);
      expect(dStarts, `tick ${tick}: d started once`).toHaveLength(1);
      expect(dStarts[0]![0], `tick ${tick}: d after both`).toBeGreaterThanOrEqual(Math.max(aAt, bAt));
    }
    // No d of any tick, planned before or after, started twice.
    const doubled = [...byTick()].filter(([, agents]) => (agents.get('d')?.length ?? 0) > 1).map(([tick]) => tick);
    expect(doubled).toEqual([]);
  }, 120_000);
});
