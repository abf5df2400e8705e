import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestRedis } from '@werkpilot/test-support';
import { bearer, startHttpHarness, type Harness } from './_http-harness.js';

const redis = useTestRedis();
const TOKEN = 'fuzz-token';
const REQUESTS = 1200;

let h: Harness;
beforeAll(async () => {
  h = await startHttpHarness(redis, { credentials: { token: TOKEN } });
});
afterAll(async () => {
  await h?.close();
});

/** A small seeded PRNG (mulberry32), so a failure can be replayed with the printed seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('fuzzing the mutating routes', () => {
  it(`answers ${REQUESTS} random and malformed requests without a 5xx, and stays alive`, async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const int = (n: number) => Math.floor(random() * n);

    const strings = [
      '',
      ' ',
      'alpha',
      'beta',
      'nobody',
      'ALPHA',
      '..',
      '../../etc/passwd',
      '%00',
      '%E0%A4%A',
      '%',
      '%zz',
      '💥',
      'a'.repeat(300),
      '<script>alert(1)</script>',
      "'; DROP TABLE x;--",
      'repeat:alpha:1',
      '-1',
      '0',
      '1',
      '999999999999',
      'null',
      'undefined',
      '__proto__',
      'constructor',
      'a b',
      'a/b',
      'a\\b',
      '{}',
      '[]',
      'retry',
      'pipeline:x:alpha',
    ];
    const atoms: (() => unknown)[] = [
      () => null,
      () => true,
      () => int(1e9) - 5e8,
      () => random() * 1e308,
      () => pick(strings),
      () => [],
      () => ({}),
      () => ({ __proto__: { polluted: true } }),
      () => 'x'.repeat(int(5000)),
    ];
    const value = (depth = 0): unknown => {
      if (depth > 3 || random() < 0.5) return pick(atoms)();
      if (random() < 0.5) return Array.from({ length: int(4) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['data', 'withDependents', 'reason', pick(strings)]), value(depth + 1)]));
    };
    const body = (): { raw?: string; contentType?: string } => {
      const kind = int(8);
      if (kind === 0) return {};
      if (kind === 1) return { raw: pick(['{', '{"data":', 'nul', '[1,2', '"unterminated', '{"a":1}}', '\u0000', '{"withDependents":tru}']) };
      if (kind === 2) return { raw: JSON.stringify(value()), contentType: pick(['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) };
      if (kind === 3) return { raw: JSON.stringify({ data: value(), withDependents: pick([true, false, 'yes', 1, null]) }) };
      if (kind === 4) return { raw: JSON.stringify({ reason: value() }) };
      return { raw: JSON.stringify(value()) };
    };
    const segment = () => (random() < 0.8 ? encodeURIComponent(pick(strings)) : pick(strings));
    const routes: [string, () => string][] = [
      ['POST', () => `/api/agents/${segment()}/run`],
      ['POST', () => `/api/agents/${segment()}/enable`],
      ['POST', () => `/api/agents/${segment()}/disable`],
      ['POST', () => `/api/agents/${segment()}/circuit/reset`],
      ['POST', () => `/api/dlq/${segment()}/retry`],
      ['POST', () => '/api/dlq/retry'],
      ['DELETE', () => `/api/dlq/${segment()}`],
      ['POST', () => `/api/runs/${segment()}/cancel`],
      ['GET', () => `/api/dlq?offset=${segment()}&limit=${segment()}`],
      ['GET', () => `/api/runs/${segment()}`],
      ['PUT', () => `/api/agents/${segment()}/run`],
    ];

    const statuses = new Map<number, number>();
    const failures: string[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      const [method, path] = pick(routes);
      const url = path();
      const { raw, contentType } = method === 'GET' ? {} : body();
      const headers: Record<string, string> = { ...bearer(TOKEN) };
      if (raw !== undefined) headers['content-type'] = contentType ?? 'application/json';
      let status: number;
      let text = '';
      try {
        const res = await fetch(`${h.url}${url}`, { method, headers, ...(raw !== undefined ? { body: raw } : {}) });
        status = res.status;
        text = await res.text();
      } catch (err) {
        failures.push(`${method} ${url}: request failed: ${(err as Error).message}`);
        continue;
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500) failures.push(`${method} ${url} ${raw?.slice(0, 80)} → ${status} ${text.slice(0, 200)}`);
      else if (status >= 400 && !/^\{"error":"[\s\S]*"\}$/.test(text)) failures.push(`${method} ${url} → ${status} without an { error } body: ${text.slice(0, 200)}`);
      if (/\n\s+at |node_modules/.test(text)) failures.push(`${method} ${url} → leaked a stack: ${text.slice(0, 200)}`);
    }
    expect(failures, `seed ${seed}: ${failures.slice(0, 5).join('\n')}`).toEqual([]);
    console.log(`fuzz seed ${seed}: statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`);
    // The bad input was mostly refused, unknown names were not found, and the valid requests among
    // them (enable alpha, retry the DLQ, ...) were served.
    expect(statuses.get(400) ?? 0).toBeGreaterThan(REQUESTS / 10);
    expect(statuses.get(404) ?? 0).toBeGreaterThan(0);
    expect([...statuses].filter(([status]) => status >= 200 && status < 300).reduce((n, [, count]) => n + count, 0)).toBeGreaterThan(0);

    const alive = await fetch(`${h.url}/healthz`);
    expect(alive.status).toBe(200);
    const agents = await fetch(`${h.url}/api/agents`, { headers: bearer(TOKEN) });
    expect(agents.status).toBe(200);
    // Nothing was polluted by `__proto__` bodies.
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  }, 120_000);
});
