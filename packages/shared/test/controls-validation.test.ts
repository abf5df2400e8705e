import { describe, expect, it } from 'vitest';
import { buildRegistry, defineLimiter, RegistryError, type AgentModule } from '@werkpilot/shared';

const run = async () => null;
const mod = (definition: Record<string, unknown>): AgentModule => ({ definition: { run, ...definition }, source: `/agents/${String(definition.name)}.ts` });
const limiter = (definition: Record<string, unknown>, file = `${String(definition.name)}.ts`): AgentModule => ({ definition: { kind: 'limiter', ...definition }, source: `/agents/${file}` });

function problemsOf(modules: AgentModule[]): string[] {
  try {
    buildRegistry(modules);
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    return (err as RegistryError).problems;
  }
  throw new Error('expected the registry to be rejected');
}

describe('fleet controls in the registry', () => {
  it('applies the defaults: one run at a time, skip, no rate limit, latest catch-up', () => {
    const spec = buildRegistry([mod({ name: 'a', schedule: { cron: '* * * * *' } })]).require('a');
    expect(spec).toMatchObject({ overlap: 'skip', concurrency: { limit: 1 }, rateLimit: undefined, limiters: [], catchUp: 'latest' });
  });

  it('reads every control and the limiters of the directory', () => {
    const key = (data: unknown) => String((data as { tenant: string }).tenant);
    const registry = buildRegistry([
      mod({
        name: 'sync',
        schedule: { cron: '0 * * * *' },
        overlap: 'bufferOne',
        concurrency: { limit: 3, key },
        rateLimit: { max: 10, perMs: 60_000, key },
        limiters: ['openai', { name: 'crm', cost: 0 }],
        catchUp: { windowMs: 3_600_000 },
      }),
      { definition: defineLimiter({ name: 'openai', max: 500, perMs: 60_000 }), source: '/agents/openai.ts' },
      limiter({ name: 'crm', max: 5, perMs: 1000 }),
    ]);
    expect(registry.require('sync')).toMatchObject({
      overlap: 'bufferOne',
      concurrency: { limit: 3, key },
      rateLimit: { max: 10, perMs: 60_000, key },
      limiters: [
        { name: 'openai', cost: 1 },
        { name: 'crm', cost: 0 },
      ],
      catchUp: { windowMs: 3_600_000 },
    });
    expect([...registry.limiters.keys()]).toEqual(['openai', 'crm']);
    expect(registry.size).toBe(1);
  });

  it('lists every bad value of every new field at once', () => {
    const problems = problemsOf([
      mod({ name: 'a', overlap: 'bufferAll', concurrency: { limit: 0, key: 'tenant' } }),
      mod({ name: 'b', concurrency: { max: 3 }, rateLimit: { max: 1.5, perMs: -1, key: 7 } }),
      mod({ name: 'c', overlap: 'allowAll', concurrency: { limit: 2 }, rateLimit: 'fast', limiters: ['ghost', 'ghost', 42, { name: 'api', cost: -1 }] }),
      mod({ name: 'd', catchUp: 'all', limiters: 'api' }),
      mod({ name: 'e', schedule: { cron: '* * * * *' }, catchUp: { windowMs: 0, every: true }, limiters: [{ name: 'api', cost: 99 }] }),
      limiter({ name: 'api', max: 10, perMs: 1000 }),
      limiter({ name: 'api', max: 20, perMs: 1000 }, 'api-copy.ts'),
      limiter({ name: 'Bad Name', max: 0, rate: 3 }, 'bad.ts'),
    ]);
    expect(problems).toEqual([
      'agent "a" (a.ts): overlap must be one of "skip", "queue", "bufferOne", "cancelOther", "allowAll", got "bufferAll"',
      'agent "a" (a.ts): concurrency.limit must be a positive integer, got 0',
      'agent "a" (a.ts): concurrency.key must be a function (data) => string, got "tenant"',
      'agent "b" (b.ts): concurrency has no field "max" (known: limit, key)',
      'agent "b" (b.ts): concurrency.limit is required',
      'agent "b" (b.ts): rateLimit.max must be a positive integer, got 1.5',
      'agent "b" (b.ts): rateLimit.perMs must be a positive integer (ms), got -1',
      'agent "b" (b.ts): rateLimit.key must be a function (data) => string, got 7',
      'agent "c" (c.ts): overlap "allowAll" sets no limit, so concurrency has nothing to limit: remove one of them',
      'agent "c" (c.ts): rateLimit must be { max, perMs, key? }',
      'agent "c" (c.ts): limiters[2] must be a limiter name or { name, cost }, got 42',
      'agent "c" (c.ts): limiters[3].cost must be a whole number of tokens (0: only through ctx.limit), got -1',
      'agent "c" (c.ts): limiters lists "ghost" more than once',
      'agent "d" (d.ts): limiters must be an array of limiter names (or { name, cost }), got "api"',
      'agent "d" (d.ts): catchUp must be "latest", "none" or { windowMs }, got "all"',
      'agent "d" (d.ts): catchUp applies to scheduled runs: add a schedule or remove catchUp',
      'agent "e" (e.ts): catchUp has no field "every" (known: windowMs)',
      'agent "e" (e.ts): catchUp.windowMs must be a positive integer (ms), got 0',
      'duplicate limiter name "api" in api.ts and api-copy.ts',
      'limiter "Bad Name" (bad.ts): name must match [a-z0-9][a-z0-9-]*, got "Bad Name"',
      'limiter "Bad Name" (bad.ts): defineLimiter has no field "rate" (known: name, max, perMs)',
      'limiter "Bad Name" (bad.ts): max must be a positive integer, got 0',
      'limiter "Bad Name" (bad.ts): perMs is required',
      'agent "c" (c.ts): limiters names unknown limiter "ghost"; define it with defineLimiter({ name: \'ghost\', max, perMs }) in the agents directory',
      'agent "e" (e.ts): limiters takes 99 tokens of "api" per run, more than its max of 10: no run could ever start',
    ]);
  });
});
