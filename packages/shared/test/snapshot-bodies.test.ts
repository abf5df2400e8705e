import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { DurationWindow, FragmentBlocks, bodySegment, prepareBody } from '@werkpilot/shared';

describe('prepared bodies', () => {
  it('gzips a body of separately compressed segments into one stream any gunzip reads', async () => {
    const texts = ['# HELP x\n', '', 'werkpilot_agent_runs_total{agent="a"} 1\n'.repeat(5000), 'é€😀\n', 'tail'];
    const body = prepareBody(texts.map(bodySegment), { contentType: 'text/plain', etag: 'W/"1"' });
    const gzipped = await body.gzipped();
    expect(Buffer.concat(body.chunks).toString()).toBe(texts.join(''));
    expect(body.byteLength).toBe(Buffer.byteLength(texts.join('')));
    expect(gunzipSync(Buffer.concat(gzipped.chunks)).toString()).toBe(texts.join(''));
    expect(gzipped.byteLength).toBeLessThan(body.byteLength / 10);
    expect(await body.gzipped()).toBe(gzipped);
  });
});

describe('fragment blocks', () => {
  const names = Array.from({ length: 10 }, (_, i) => `agent-${i}`);
  const render = (version: Map<string, number>) => (agent: string) => [`${agent}:${version.get(agent) ?? 0};`, `${agent}!`, `${agent}!`];

  it('rebuilds only the blocks of changed agents and shares identical variants', async () => {
    const blocks = new FragmentBlocks(names, 3, 4);
    const version = new Map<string, number>();
    await blocks.update(names, render(version), (kind) => (kind === 2 ? 1 : undefined));
    const before = blocks.segments(0).slice();
    expect(before.map((s) => s.bytes.toString()).join('')).toBe(names.map((n) => `${n}:0;`).join(''));
    expect(blocks.segments(2)).toEqual(blocks.segments(1));
    expect(blocks.segments(2)[0]).toBe(blocks.segments(1)[0]);

    version.set('agent-5', 1);
    await blocks.update(['agent-5'], render(version));
    const after = blocks.segments(0);
    expect(after[0]).toBe(before[0]);
    expect(after[2]).toBe(before[2]);
    expect(after[1]).not.toBe(before[1]);
    expect(after.map((s) => s.bytes.toString()).join('')).toContain('agent-5:1;');
  });
});

describe('the duration window', () => {
  it('holds the newest 1000 durations whatever the batch sizes', () => {
    const window = new DurationWindow();
    let all: number[] = [];
    let next = 0;
    for (const size of [1, 5, 30, 200, 999, 1000, 1001, 3, 2500, 17]) {
      const batch = Array.from({ length: size }, () => (next = (next * 7919 + 13) % 100_003));
      // Newest first, as Redis lists them.
      window.add([...batch].reverse());
      all = [...all, ...batch];
      const expected = all.slice(-1000).sort((a, b) => a - b);
      expect([...window.sortedNewest()], `after ${size}`).toEqual(expected);
      expect([...window.sortedNewest(100)]).toEqual(all.slice(-100).sort((a, b) => a - b));
    }
  });
});
