import { describe, expect, it } from 'vitest';
import { compileGlob, createEventFilter, InvalidInputError } from '@werkpilot/shared';

describe('compileGlob', () => {
  const cases: [pattern: string, subject: string, matches: boolean][] = [
    ['agent:*', 'agent:failed', true],
    ['agent:*', 'agent:', true],
    ['agent:*', 'circuit:opened', false],
    ['*:failed', 'agent:failed', true],
    ['*:failed', 'agent:failed:x', false],
    ['agent:failed', 'agent:failed', true],
    ['agent:failed', 'agent:faile', false],
    ['*', '', true],
    ['**', 'anything', true],
    ['a*b*c', 'abc', true],
    ['a*b*c', 'aXbYc', true],
    ['a*b*c', 'acb', false],
    ['ab*ba', 'aba', false],
    ['ab*ba', 'abba', true],
    ['*a*a*', 'a', false],
    ['*a*a*', 'aa', true],
    ['a.b', 'aXb', false],
    ['circuit:*ed', 'circuit:opened', true],
    ['*ed*', 'circuit:closed', true],
  ];
  it.each(cases)('%s on %s: %s', (pattern, subject, matches) => {
    expect(compileGlob(pattern).matches(subject)).toBe(matches);
  });

  it('matches a star bomb against a long subject in linear time', () => {
    // As a regex, `^.*.*…X$` backtracks for longer than anyone waits; here it is one pass.
    const bomb = compileGlob(`${'*'.repeat(5000)}X`);
    const alternating = compileGlob(`${'*a'.repeat(2500)}*b`);
    const subject = 'a'.repeat(200_000);
    const started = performance.now();
    expect(bomb.matches(subject)).toBe(false);
    expect(alternating.matches(subject)).toBe(false);
    expect(alternating.matches(`${subject}b`)).toBe(true);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('createEventFilter', () => {
  const event = (type: string, agent?: string) => ({ type, at: new Date(0).toISOString(), data: {}, ...(agent ? { agent } : {}) });

  it('refuses too long a pattern without echoing it whole', () => {
    const pattern = `${'*'.repeat(9999)}X`;
    let error: unknown;
    try {
      createEventFilter({ types: pattern });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toBe('type: at most 20 values of at most 100 characters each');
    expect(() => createEventFilter({ types: `${'*'.repeat(100)}X` })).toThrow(/^type: "\*{40}…" is longer than 100 characters$/);
    expect(() => createEventFilter({ types: Array.from({ length: 21 }, (_, i) => `t${i}`).join(',') })).toThrow(/^type: at most 20 values, got 21$/);
    expect(() => createEventFilter({ agents: Array.from({ length: 101 }, () => 'a') })).toThrow(/^agent: at most 100 values/);
  });

  it('applies the longest allowed star bomb quickly and correctly', () => {
    const filter = createEventFilter({ types: `${'*'.repeat(99)}X` });
    const started = performance.now();
    for (let i = 0; i < 10_000; i++) filter(event(`agent:${'a'.repeat(i % 50)}`));
    expect(performance.now() - started).toBeLessThan(1000);
    expect(filter(event('agent:failedX'))).toBe(true);
    expect(filter(event('agent:failed'))).toBe(false);
  });

  it('filters by type pattern and agent together', () => {
    const filter = createEventFilter({ types: 'agent:*,circuit:opened', agents: 'crm-sync' });
    expect(filter(event('agent:started', 'crm-sync'))).toBe(true);
    expect(filter(event('circuit:opened', 'crm-sync'))).toBe(true);
    expect(filter(event('circuit:closed', 'crm-sync'))).toBe(false);
    expect(filter(event('agent:started', 'lead-scoring'))).toBe(false);
    expect(filter(event('agent:started'))).toBe(false);
  });
});
