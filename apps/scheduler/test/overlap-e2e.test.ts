import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useTestRedis, waitFor, writeAgentsDir } from '@werkpilot/test-support';
import { FILE_SIGNALS, processCluster, type ProcessCluster } from './_process-cluster.js';

/**
 * "Never two runs of one agent at once, across all workers", with two worker processes of one
 * slot each: overlap.test.ts proves it inside one process. Runs hold until the test releases them
 * (a file per run), so what happens while one is running is known, not raced.
 */

const redis = useTestRedis();
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-e2e-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const holding = (name: string, overlap: 'skip' | 'queue') => `import { defineAgent } from '@werkpilot/shared';
${FILE_SIGNALS}
export default defineAgent({
  name: '${name}',
  overlap: '${overlap}',
  timeoutMs: 60000,
  async run(ctx) {
    note('start ${name}#' + ctx.data.n);
    await until('release-' + ctx.data.n, ctx.signal);
    note('end ${name}#' + ctx.data.n);
    return { n: ctx.data.n };
  },
});
`;

const agentsDir = writeAgentsDir({
  'invoice-export.ts': holding('invoice-export', 'skip'),
  'ledger-close.ts': holding('ledger-close', 'queue'),
  'other.ts': `import { defineAgent } from '@werkpilot/shared';
${FILE_SIGNALS}
export default defineAgent({ name: 'other', async run() { note('other'); return null; } });
`,
});

interface FinishedRun {
  result: { outcome: string; reasons?: string[] };
  workerId: string;
}

interface Setup {
  cluster: ProcessCluster;
  lines(): string[];
  release(n: number): void;
  waitForLine(line: string): Promise<void>;
  /** The finished run's result and the worker that ran it. */
  finished(runId: string): Promise<FinishedRun>;
}

async function setup(): Promise<Setup> {
  const dir = mkdtempSync(path.join(scratch, 'overlap-'));
  const cluster = await processCluster(redis, agentsDir, { E2E_DIR: dir });
  await cluster.startScheduler();
  await cluster.startWorkers(2, { WORKER_CONCURRENCY: '1' });
  const lines = () => {
    try {
      return readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n').filter(Boolean);
    } catch {
      return [];
    }
  };
  return {
    cluster,
    lines,
    release: (n) => writeFileSync(path.join(dir, `release-${n}`), ''),
    waitForLine: async (line) => {
      await waitFor(() => lines().includes(line), { timeoutMs: 20_000, what: () => `"${line}"; log:\n${lines().join('\n')}` });
    },
    finished: (runId) =>
      waitFor(
        async () => {
          const run = await cluster.api<FinishedRun & { state: string }>('GET', `/api/runs/${runId}`);
          return run.body.state === 'completed' && run.body.result ? run.body : undefined;
        },
        { timeoutMs: 20_000, what: `run ${runId} to complete` },
      ),
  };
}

describe('overlap across worker processes', () => {
  it("skips a run of a 'skip' agent with reason overlap on the other worker while the first worker runs it, and runs the next once it ended", async () => {
    const { cluster, lines, release, waitForLine, finished } = await setup();
    const first = await cluster.run('invoice-export', { data: { n: 1 } });
    await waitForLine('start invoice-export#1');
    const second = await cluster.run('invoice-export', { data: { n: 2 } });
    const skipped = await finished(second);
    expect(skipped.result).toMatchObject({ outcome: 'skipped', reasons: ['overlap'] });
    const held = await cluster.api<{ workerId: string }>('GET', `/api/runs/${first}`);
    // The first worker's only slot is taken: the skip was decided on the other process.
    expect(skipped.workerId).not.toBe(held.body.workerId);

    release(1);
    expect((await finished(first)).result).toMatchObject({ outcome: 'success' });
    release(3);
    const third = await cluster.run('invoice-export', { data: { n: 3 } });
    expect((await finished(third)).result).toMatchObject({ outcome: 'success' });
    expect(lines().filter((l) => l.includes('invoice-export'))).toEqual(['start invoice-export#1', 'end invoice-export#1', 'start invoice-export#3', 'end invoice-export#3']);
  }, 90_000);

  it("runs the queued runs of a 'queue' agent one at a time and in order on two workers, without holding the other worker's slot", async () => {
    const { cluster, lines, release, waitForLine, finished } = await setup();
    const runIds = [await cluster.run('ledger-close', { data: { n: 0 } })];
    await waitForLine('start ledger-close#0');
    for (let n = 1; n <= 3; n++) runIds.push(await cluster.run('ledger-close', { data: { n } }));
    // Run 0 holds one worker's only slot; 'other' can only run if the queued runs hold none.
    await finished(await cluster.run('other'));
    expect(lines().filter((l) => l.includes('ledger-close'))).toEqual(['start ledger-close#0']);
    for (let n = 0; n < 4; n++) {
      await waitForLine(`start ledger-close#${n}`);
      release(n);
    }
    const results = await Promise.all(runIds.map((id) => finished(id)));
    expect(results.map((r) => r.result.outcome)).toEqual(['success', 'success', 'success', 'success']);
    // Never two at once: each run ended before the next started, whichever worker ran it.
    expect(lines().filter((l) => l.includes('ledger-close'))).toEqual([0, 1, 2, 3].flatMap((n) => [`start ledger-close#${n}`, `end ledger-close#${n}`]));
  }, 90_000);
});
