import { describe, expect, it } from 'vitest';
import { AgentStateStore, CircuitBreaker, computeScore, createKeys, readScores } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis } from '@werkpilot/test-support';

const redis = useTestRedis();

describe('performance score', () => {
  const base = { runs: 100, successRate: 1, p95: 0, timeoutMs: 10_000, restartsLastHour: 0, maxRestartsPerHour: 50 };

  it('is null before the first run', () => {
    expect(computeScore({ ...base, runs: 0, successRate: 0, p95: null })).toBeNull();
  });

  it.each([
    ['a perfect agent', base, 100],
    // 0.6·0.9 + 0.25·(1 − 5000/10000) + 0.15·(1 − 10/50) = 0.54 + 0.125 + 0.12 = 0.785
    ['90 % success, p95 half the timeout, 10 of 50 restarts', { ...base, successRate: 0.9, p95: 5000, restartsLastHour: 10 }, 79],
    // p95 over the timeout and restarts over the limit clamp to 0: 0.6·0.5 = 0.3
    ['half failing, p95 past its timeout, restarts past the limit', { ...base, successRate: 0.5, p95: 20_000, restartsLastHour: 80 }, 30],
    ['always failing', { ...base, successRate: 0, p95: 10_000, restartsLastHour: 50 }, 0],
    // 0.6·0.75 + 0.25·(1 − 2000/8000) + 0.15·(1 − 1/4) = 0.45 + 0.1875 + 0.1125 = 0.75
    ['75 % success, p95 a quarter of the timeout, 1 of 4 restarts', { ...base, successRate: 0.75, p95: 2000, timeoutMs: 8000, restartsLastHour: 1, maxRestartsPerHour: 4 }, 75],
  ])('scores %s', (_name, input, expected) => {
    expect(computeScore(input)).toBe(expected);
  });

  it('is computed from the last 100 recorded runs and the restarts of the hour', async () => {
    const keys = createKeys(uniquePrefix());
    const client = redis.client();
    const state = new AgentStateStore({ redis: client, keys });
    const circuit = new CircuitBreaker({ redis: client, keys });
    const spec = { name: 'lead-scoring', timeoutMs: 1000, maxRestartsPerHour: 10 };
    expect((await readScores({ redis: client, keys, circuit }, [spec])).get('lead-scoring')).toBeNull();

    // 150 old failures, then 100 recent runs: 80 successes of 100 ms, 20 failures of 500 ms.
    for (let i = 0; i < 150; i++) await state.record({ agent: spec.name, outcome: 'failure', durationMs: 900, at: 1 });
    for (let i = 0; i < 100; i++) {
      const isSuccess = i % 5 !== 0;
      await state.record({ agent: spec.name, outcome: isSuccess ? 'success' : 'failure', durationMs: isSuccess ? 100 : 500, at: 2 });
    }
    await state.record({ agent: spec.name, outcome: 'skipped', at: 3, error: 'overlap' });
    for (let i = 0; i < 5; i++) await circuit.record({ agent: spec.name, outcome: 'failure', at: 4 }, 10);

    // 0.6·0.8 + 0.25·(1 − 500/1000) + 0.15·(1 − 5/10) = 0.48 + 0.125 + 0.075 = 0.68
    expect((await readScores({ redis: client, keys, circuit }, [spec])).get('lead-scoring')).toBe(68);
  });

  it('carries over the outcome window older versions kept in a list, on the first run after the upgrade', async () => {
    const keys = createKeys(uniquePrefix());
    const client = redis.client();
    const state = new AgentStateStore({ redis: client, keys });
    const circuit = new CircuitBreaker({ redis: client, keys });
    const spec = { name: 'lead-scoring', timeoutMs: 1000, maxRestartsPerHour: 10 };
    // As versions before the one-script run path left it: 99 runs, newest first, 9 of them failed.
    await client.rpush(keys.agentOutcomes(spec.name), ...Array.from({ length: 99 }, (_, i) => (i % 11 === 0 ? 'f' : 's')));
    expect((await state.get(spec.name)).recentRuns).toBe(99);
    await state.record({ agent: spec.name, outcome: 'failure', durationMs: 100, at: 1 });
    // 100 runs, 10 failed: 0.6·0.9 + 0.25·(1 − 100/1000) + 0.15·(1 − 0/10) = 0.54 + 0.225 + 0.15 = 0.915
    expect(await state.get(spec.name)).toMatchObject({ recentRuns: 100, recentSuccessRate: 0.9 });
    expect((await readScores({ redis: client, keys, circuit }, [spec])).get('lead-scoring')).toBe(92);
    // The window keeps its size: the oldest (a success) drops out as a success comes in.
    await state.record({ agent: spec.name, outcome: 'success', durationMs: 100, at: 2 });
    expect(await state.get(spec.name)).toMatchObject({ recentRuns: 100, recentSuccessRate: 0.9 });
  });
});
