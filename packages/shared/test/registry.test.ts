import { describe, expect, it } from 'vitest';
import { buildRegistry, RegistryError, type AgentModule } from '@werkpilot/shared';

const run = async () => null;
const mod = (definition: Record<string, unknown>, file = `${String(definition.name)}.ts`): AgentModule => ({
  definition: { run, ...definition },
  source: `/agents/${file}`,
});

function problemsOf(modules: AgentModule[]): string[] {
  try {
    buildRegistry(modules);
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    return (err as RegistryError).problems;
  }
  throw new Error('expected the registry to be rejected');
}

describe('registry validation', () => {
  it('applies the documented defaults', () => {
    const spec = buildRegistry([mod({ name: 'a' })]).require('a');
    expect(spec).toMatchObject({
      priority: 3,
      dependsOn: [],
      timeoutMs: 60000,
      retry: { attempts: 3, backoff: { type: 'exponential', delayMs: 1000 } },
      overlap: 'skip',
      maxRestartsPerHour: 50,
      schedule: undefined,
      depth: 0,
    });
  });

  it('rejects duplicate names, naming both files', () => {
    expect(problemsOf([mod({ name: 'a' }, 'one.ts'), mod({ name: 'a' }, 'two.ts')])).toEqual(['duplicate agent name "a" in one.ts and two.ts']);
  });

  it('rejects a dependency on an unknown agent', () => {
    expect(problemsOf([mod({ name: 'a', dependsOn: ['ghost'] })])).toEqual(['agent "a" depends on unknown agent "ghost"']);
  });

  it('prints a cycle as a path that returns to its start', () => {
    const problems = problemsOf([mod({ name: 'a', dependsOn: ['c'] }), mod({ name: 'b', dependsOn: ['a'] }), mod({ name: 'c', dependsOn: ['b'] }), mod({ name: 'd', dependsOn: ['a'] })]);
    expect(problems).toEqual(['dependency cycle: a → c → b → a']);
  });

  it('reports a self-dependency as a cycle', () => {
    expect(problemsOf([mod({ name: 'a', dependsOn: ['a'] })])).toEqual(['dependency cycle: a → a']);
  });

  it('rejects bad cron, bad timezone, bad priority and a missing run', () => {
    const problems = problemsOf([
      mod({ name: 'bad-cron', schedule: { cron: '*/5 * * *' } }),
      mod({ name: 'bad-field', schedule: { cron: '99 * * * *' } }),
      mod({ name: 'bad-tz', schedule: { cron: '* * * * *', tz: 'Mars/Olympus' } }),
      mod({ name: 'bad-priority', priority: 5 }),
      { definition: { name: 'no-run' }, source: '/agents/no-run.ts' },
    ]);
    expect(problems).toHaveLength(5);
    expect(problems[0]).toMatch(/bad-cron.*has 4 fields/);
    expect(problems[1]).toMatch(/bad-field.*cron "99 \* \* \* \*" is invalid/);
    expect(problems[2]).toMatch(/bad-tz.*"Mars\/Olympus" is not an IANA time zone/);
    expect(problems[3]).toMatch(/bad-priority.*priority must be 1 \(critical\), 2 \(important\) or 3 \(normal\), got 5/);
    expect(problems[4]).toBe('agent "no-run" (no-run.ts): run must be a function');
  });

  it('reports every problem at once, in one message', () => {
    const modules = [
      mod({ name: 'Bad Name' }),
      mod({ name: 'x', timeoutMs: -1, retry: { attempts: 0 } }),
      mod({ name: 'y', dependsOn: ['z'] }),
      { definition: 42, source: '/agents/number.js' },
    ];
    const problems = problemsOf(modules);
    expect(problems).toHaveLength(5);
    let message = '';
    try {
      buildRegistry(modules);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message.split('\n')[0]).toBe('the agent registry has 5 problems:');
    expect(message).toContain('number.js: the default export must be defineAgent({ ... }), got 42');
    expect(message).toContain('timeoutMs must be a positive integer, got -1');
    expect(message).toContain('retry.attempts must be a positive integer, got 0');
  });

  it('lists every problem of every agent: a bad cron and an unknown dependency of the same agent both', () => {
    const problems = problemsOf([
      mod({ name: 'crm-sync', schedule: { cron: '*/5 * * *' }, dependsOn: ['ghost'] }),
      mod({ name: 'lead-scoring', priority: 9, dependsOn: ['crm-sync', 'phantom'] }),
      mod({ name: 'loop-a', timeoutMs: 0, dependsOn: ['loop-b'] }),
      mod({ name: 'loop-b', dependsOn: ['loop-a'] }),
    ]);
    expect(problems).toEqual([
      expect.stringMatching(/^agent "crm-sync" \(crm-sync\.ts\): .*has 4 fields/),
      'agent "lead-scoring" (lead-scoring.ts): priority must be 1 (critical), 2 (important) or 3 (normal), got 9',
      'agent "loop-a" (loop-a.ts): timeoutMs must be a positive integer, got 0',
      'agent "crm-sync" depends on unknown agent "ghost"',
      'agent "lead-scoring" depends on unknown agent "phantom"',
      'dependency cycle: loop-a → loop-b → loop-a',
    ]);
  });

  it('refuses numbers that would misbehave: a timeout or backoff past 2^31 − 1 ms, absurd counts', () => {
    const problems = problemsOf([
      mod({ name: 'slow', timeoutMs: 2 ** 31 }),
      mod({ name: 'patient', retry: { attempts: 1001, backoff: { type: 'exponential', delayMs: 2 ** 31 } } }),
      mod({ name: 'tolerant', maxRestartsPerHour: 1e12 }),
    ]);
    expect(problems).toEqual([
      'agent "slow" (slow.ts): timeoutMs must be at most 2147483647 ms (2^31 − 1, about 24.8 days: Node fires a longer timer at once), got 2147483648',
      'agent "patient" (patient.ts): retry.attempts must be at most 1000, got 1001',
      'agent "patient" (patient.ts): retry.backoff.delayMs must be at most 2147483647 ms (2^31 − 1, about 24.8 days), got 2147483648',
      'agent "tolerant" (tolerant.ts): maxRestartsPerHour must be at most 1000000, got 1000000000000',
    ]);
    expect(buildRegistry([mod({ name: 'longest', timeoutMs: 2 ** 31 - 1 })]).require('longest').timeoutMs).toBe(2147483647);
  });

  it('accepts 5- and 6-field cron with a time zone', () => {
    const registry = buildRegistry([mod({ name: 'five', schedule: { cron: '0 23 * * *', tz: 'Europe/Zurich' } }), mod({ name: 'six', schedule: { cron: '*/5 * * * * *' } })]);
    expect(registry.require('five').schedule).toEqual({ cron: '0 23 * * *', tz: 'Europe/Zurich' });
  });
});

describe('depth and layers', () => {
  it('computes depth as 1 + the deepest dependency and groups layers', () => {
    const registry = buildRegistry([
      mod({ name: 'crm' }),
      mod({ name: 'inbox' }),
      mod({ name: 'score', dependsOn: ['crm'] }),
      mod({ name: 'plan', dependsOn: ['score', 'inbox'] }),
      mod({ name: 'report', dependsOn: ['plan', 'crm'] }),
    ]);
    expect(registry.layers).toEqual([['crm', 'inbox'], ['score'], ['plan'], ['report']]);
    expect(registry.require('report').depth).toBe(3);
  });

  it('lists transitive dependents in dependency order', () => {
    const registry = buildRegistry([
      mod({ name: 'a' }),
      mod({ name: 'b', dependsOn: ['a'] }),
      mod({ name: 'c', dependsOn: ['a'] }),
      mod({ name: 'd', dependsOn: ['b', 'c'] }),
      mod({ name: 'other' }),
    ]);
    expect(registry.dependentsOf('a')).toEqual(['b', 'c', 'd']);
    expect(registry.dependentsOf('d')).toEqual([]);
  });
});
