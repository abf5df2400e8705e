import { describe, expect, it } from 'vitest';
import { ConfigError, describeRedisTarget, loadConfig } from '@werkpilot/shared';

function errorOf(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(2);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('redis target configuration', () => {
  it('is one Redis at REDIS_URL by default, as before', () => {
    expect(loadConfig({}).redisTarget).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
    expect(loadConfig({ REDIS_URL: 'redis://:pw@h:6380/2' }).redisTarget).toEqual({ kind: 'single', url: 'redis://:pw@h:6380/2' });
  });

  it('reads a Sentinel set with its master name and password', () => {
    const target = loadConfig({ REDIS_SENTINELS: '10.0.0.1:26379, 10.0.0.2:26380,[::1]:26381', REDIS_SENTINEL_NAME: 'wp', REDIS_PASSWORD: 's3cret' }).redisTarget;
    expect(target).toEqual({
      kind: 'sentinel',
      name: 'wp',
      password: 's3cret',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
    });
    expect(describeRedisTarget(target)).toBe('sentinel master "wp" via 10.0.0.1:26379,10.0.0.2:26380,::1:26381');
  });

  it('reads cluster nodes', () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'redis-a:7000,redis-b:7001' }).redisTarget).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'redis-a', port: 7000 },
        { host: 'redis-b', port: 7001 },
      ],
      password: undefined,
    });
  });

  it('refuses combinations that leave the target ambiguous, in one line each', () => {
    expect(errorOf({ REDIS_URL: 'redis://h:6379', REDIS_CLUSTER_NODES: 'h:7000' })).toBe(
      'REDIS_URL and REDIS_CLUSTER_NODES must not be set together: set one of REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES',
    );
    expect(errorOf({ REDIS_SENTINELS: 'h:26379', REDIS_SENTINEL_NAME: 'wp', REDIS_CLUSTER_NODES: 'h:7000' })).toBe(
      'REDIS_SENTINELS and REDIS_CLUSTER_NODES must not be set together: set one of REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES',
    );
    expect(errorOf({ REDIS_SENTINELS: 'h:26379' })).toBe('REDIS_SENTINELS needs REDIS_SENTINEL_NAME (the name the sentinels monitor the primary under)');
    expect(errorOf({ REDIS_SENTINEL_NAME: 'wp' })).toBe('REDIS_SENTINEL_NAME is set but REDIS_SENTINELS is not: set both, or neither');
    expect(errorOf({ REDIS_PASSWORD: 'x' })).toBe('REDIS_PASSWORD goes with REDIS_SENTINELS or REDIS_CLUSTER_NODES; with REDIS_URL put it in the URL (redis://:password@host:6379)');
  });

  it('names a malformed node list and what is allowed', () => {
    expect(errorOf({ REDIS_CLUSTER_NODES: 'h:7000,nohost' })).toBe('REDIS_CLUSTER_NODES must be a comma-separated list of host:port, e.g. 10.0.0.1:6379,10.0.0.2:6379, got "h:7000,nohost"');
    expect(errorOf({ REDIS_SENTINELS: 'h:99999', REDIS_SENTINEL_NAME: 'wp' })).toBe(
      'REDIS_SENTINELS must be a comma-separated list of host:port, e.g. 10.0.0.1:26379,10.0.0.2:26379, got "h:99999"',
    );
  });
});
