import { describe, expect, it } from 'vitest';
import { errorSignature, groupDeadLetters, groupIdOf, selectDeadLetters } from '@werkpilot/shared';

describe('error signatures', () => {
  it.each([
    ['read ECONNRESET from 10.0.0.7:5432 after 1200 ms', 'read ECONNRESET from <ip> after <n> ms'],
    ['quota exceeded for account 3f2a9c1e-77aa-4b1e-9c1d-1234567890ab', 'quota exceeded for account <uuid>'],
    ['bad pointer 0xdeadBEEF in frame 12', 'bad pointer <hex> in frame <n>'],
    ['commit 9f8e7d6c5b4a not found', 'commit <hex> not found'],
    ['job job_8fk2m1x9q0zz7 timed out after 2.5 s', 'job <id> timed out after <n> s'],
    ['upstream answered 503\n    at fetch (x.js:10:5)', 'upstream answered <n>'],
    ['ECONNRESET', 'ECONNRESET'],
  ])('%j → %j', (error, signature) => {
    expect(errorSignature(error)).toBe(signature);
  });

  it('groups by agent and signature, largest first, and selects by group, agent and text', () => {
    const heads = [
      { id: '5', agent: 'a', error: 'timeout after 30 ms', failedAt: 5000 },
      { id: '4', agent: 'b', error: 'timeout after 10 ms', failedAt: 4000 },
      { id: '3', agent: 'a', error: 'timeout after 12 ms', failedAt: 3000 },
      { id: '2', agent: 'a', error: 'disk full', failedAt: 2000 },
    ];
    const groups = groupDeadLetters(heads);
    expect(groups.map((g) => [g.agent, g.signature, g.count, g.runIds, g.firstSeen, g.lastSeen])).toEqual([
      ['a', 'timeout after <n> ms', 2, ['5', '3'], new Date(3000).toISOString(), new Date(5000).toISOString()],
      ['b', 'timeout after <n> ms', 1, ['4'], new Date(4000).toISOString(), new Date(4000).toISOString()],
      ['a', 'disk full', 1, ['2'], new Date(2000).toISOString(), new Date(2000).toISOString()],
    ]);
    expect(groups[0]!.id).toBe(groupIdOf('a', 'timeout after <n> ms'));
    expect(selectDeadLetters(heads, { group: groups[0]!.id }).map((h) => h.id)).toEqual(['5', '3']);
    expect(selectDeadLetters(heads, { agent: 'a', match: 'TIMEOUT' }).map((h) => h.id)).toEqual(['5', '3']);
    expect(selectDeadLetters(heads, { match: 'disk' }).map((h) => h.id)).toEqual(['2']);
  });
});
