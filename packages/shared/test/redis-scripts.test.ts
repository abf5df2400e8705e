import { describe, expect, it } from 'vitest';
import { defineScripts } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis } from '@werkpilot/test-support';

const redis = useTestRedis();

// Returns what the script saw: its keys and its arguments.
const ECHO_LUA = `return { table.concat(KEYS, ','), table.concat(ARGV, ',') }`;

type Echo = (...args: (string | number)[]) => Promise<[string, string]>;

describe('defineScripts', () => {
  it('takes the key count from the name (`name-N`), and from the first argument without one', async () => {
    const client = redis.client();
    const p = uniquePrefix();
    defineScripts(client, { 'testEchoTwo-2': ECHO_LUA, testEchoAny: ECHO_LUA });
    const commands = client as unknown as { testEchoTwo: Echo; testEchoAny: Echo };
    expect(await commands.testEchoTwo(`{${p}}:a`, `{${p}}:b`, 'x', 'y')).toEqual([`{${p}}:a,{${p}}:b`, 'x,y']);
    expect(await commands.testEchoAny(3, `{${p}}:a`, `{${p}}:b`, `{${p}}:c`, 'x')).toEqual([`{${p}}:a,{${p}}:b,{${p}}:c`, 'x']);
    expect(await commands.testEchoAny(0, 'x', 'y')).toEqual(['', 'x,y']);
  });

  it('defines a command once per connection: a second definition under the same command keeps the first', async () => {
    const client = redis.client();
    defineScripts(client, { 'testOnce-1': `return 'first'` });
    const first = (client as unknown as { testOnce: unknown }).testOnce;
    defineScripts(client, { 'testOnce-1': `return 'second'` });
    expect((client as unknown as { testOnce: unknown }).testOnce).toBe(first);
    expect(await (client as unknown as { testOnce: (key: string) => Promise<string> }).testOnce('k')).toBe('first');
  });
});
