import { describe, expect, it } from 'vitest';
import { freePort } from '@werkpilot/shared';
import { startApp, uniquePrefix, useTestRedis, writeAgentsDir } from '@werkpilot/test-support';

const redis = useTestRedis();

describe('registry validation of the fleet controls in real processes', () => {
  it('refuses bad controls and limiters with every problem listed, exit code 2, and nothing written to Redis', async () => {
    const prefix = uniquePrefix();
    const dir = writeAgentsDir({
      'sync.ts': `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({ name: 'sync', overlap: 'sometimes' as never, concurrency: { limit: -2 }, rateLimit: { max: 0, perMs: 1000 }, async run() {} });
`,
      'report.ts': `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({ name: 'report', catchUp: { windowMs: 'a day' } as never, limiters: ['openia'], async run() {} });
`,
      'openai.ts': `import { defineLimiter } from '@werkpilot/shared';\nexport default defineLimiter({ name: 'openai', max: 100, perMs: 0 });\n`,
    });
    const client = redis.client();
    const keysBefore = await client.dbsize();
    for (const role of ['scheduler', 'worker'] as const) {
      const app = startApp(role, { REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, WERKPILOT_AGENTS: dir, PORT: String(await freePort()) });
      expect(await app.exited).toBe(2);
      const output = app.output();
      expect(output).toContain('the agent registry has 7 problems:');
      for (const problem of [
        'agent "sync" (sync.ts): overlap must be one of "skip", "queue", "bufferOne", "cancelOther", "allowAll", got "sometimes"',
        'agent "sync" (sync.ts): concurrency.limit must be a positive integer, got -2',
        'agent "sync" (sync.ts): rateLimit.max must be a positive integer, got 0',
        'agent "report" (report.ts): catchUp.windowMs must be a positive integer (ms), got "a day"',
        'agent "report" (report.ts): catchUp applies to scheduled runs: add a schedule or remove catchUp',
        'limiter "openai" (openai.ts): perMs must be a positive integer (ms), got 0',
        `agent "report" (report.ts): limiters names unknown limiter "openia"`,
      ]) {
        expect(output).toContain(problem);
      }
      expect(output).not.toMatch(/\n\s+at /);
    }
    expect(await client.keys(`*${prefix}*`)).toEqual([]);
    if (redis.isOwned) expect(await client.dbsize()).toBe(keysBefore);
  }, 60_000);
});
