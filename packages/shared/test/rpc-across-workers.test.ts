import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteRequestError, RpcClient, createKeys, createLogger } from '@werkpilot/shared';
import { startApp, stopApps, uniquePrefix, useTestRedis, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const scratch = mkdtempSync(path.join(tmpdir(), 'werkpilot-rpc-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

// Every invocation of onRequest appends one line, in whichever worker process answers it.
const agentsDir = writeAgentsDir({
  'echo.ts': `import { appendFileSync } from 'node:fs';
import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  name: 'echo',
  async run() { return null; },
  onRequest(payload) {
    if (payload.fail) throw new RangeError('seq ' + payload.seq + ' refused');
    appendFileSync(process.env.RPC_INVOCATIONS_FILE, payload.seq + ' ' + process.pid + '\\n');
    return { seq: payload.seq, pid: process.pid };
  },
});
`,
});

describe('requests across worker processes', () => {
  it('answers each of 500 requests exactly once with 3 workers hosting the responder', async () => {
    const prefix = uniquePrefix();
    const invocations = path.join(scratch, 'invocations.txt');
    const env = { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: agentsDir, RPC_INVOCATIONS_FILE: invocations };
    const workers = [startApp('worker', env), startApp('worker', env), startApp('worker', env)];
    await Promise.all(workers.map((w) => w.waitForLog(/answering requests/, 45_000)));

    const client = new RpcClient({ redis: redis.client(), keys: createKeys(prefix), log });
    try {
      const answers: { seq: number; pid: number }[] = [];
      for (let batch = 0; batch < 10; batch++) {
        answers.push(...(await Promise.all(Array.from({ length: 50 }, (_, i) => client.request<{ seq: number; pid: number }>('echo', { seq: batch * 50 + i }, { timeoutMs: 20_000 })))));
      }
      expect(answers.map((a) => a.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i));

      const lines = readFileSync(invocations, 'utf8').trim().split('\n');
      expect(lines).toHaveLength(500);
      expect(new Set(lines.map((l) => l.split(' ')[0])).size).toBe(500);
      const answeringPids = new Set(answers.map((a) => a.pid));
      expect(answeringPids.size).toBeGreaterThan(1);
      for (const pid of answeringPids) expect(workers.map((w) => w.proc.pid)).toContain(pid);

      // A responder's error crosses the process boundary with its message and class name.
      const err = await client.request('echo', { seq: 9999, fail: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RemoteRequestError);
      expect(err).toMatchObject({ message: 'seq 9999 refused', remoteName: 'RangeError', agent: 'echo' });
    } finally {
      await client.close();
      await stopApps(workers);
    }
  }, 90_000);
});
