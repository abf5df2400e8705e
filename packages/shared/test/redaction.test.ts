import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, maskUrlCredentials } from '@werkpilot/shared';
import { REPO_ROOT } from '@werkpilot/test-support';

describe('maskUrlCredentials', () => {
  it.each([
    ['redis://:s3cret@redis.example:6379/0', 'redis://:***@redis.example:6379/0'],
    ['rediss://app:s3cret@redis.example:6380', 'rediss://app:***@redis.example:6380'],
    ['using the Redis at redis://:p%40ss@10.0.0.5:6379 now', 'using the Redis at redis://:***@10.0.0.5:6379 now'],
    ['two: redis://:a@h1 and redis://u:b@h2/1', 'two: redis://:***@h1 and redis://u:***@h2/1'],
    ['redis//:typo@host:6379', 'redis//:***@host:6379'],
    ['redis://127.0.0.1:6379', 'redis://127.0.0.1:6379'],
    ['redis://user@host:6379', 'redis://user@host:6379'],
    ['http://127.0.0.1:3001/api/agents', 'http://127.0.0.1:3001/api/agents'],
  ])('%s → %s', (text, masked) => {
    expect(maskUrlCredentials(text)).toBe(masked);
  });
});

describe('configuration errors', () => {
  const messageOf = (env: Record<string, string>) => {
    try {
      loadConfig(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('expected a ConfigError');
  };

  it('never echo a secret variable, nor the user and password of a bad REDIS_URL', () => {
    expect(messageOf({ DASHBOARD_TOKEN: '   ' })).toBe('DASHBOARD_TOKEN must be a non-empty string, got a value of 3 characters (not shown: it is a secret)');
    const both = messageOf({ DASHBOARD_USER: 'ops', DASHBOARD_PASSWORD: ' \t ', REDIS_URL: 'http://:hunter2@redis:6379' });
    expect(both).not.toContain('hunter2');
    expect(both).toContain('REDIS_URL must be a redis:// or rediss:// URL, e.g. redis://:password@host:6379/0, got "http://***@redis:6379"');
    expect(messageOf({ REDIS_URL: 'redis//user:p@ss@host' })).toBe('REDIS_URL must be a redis:// or rediss:// URL, e.g. redis://:password@host:6379/0, got "redis//***@host"');
    expect(both).toContain('DASHBOARD_PASSWORD must be a non-empty string, got a value of 3 characters (not shown: it is a secret)');
    // Not secrets: shown as given, so a typo can be found.
    expect(messageOf({ WORKER_CONCURRENCY: 'ten' })).toBe('WORKER_CONCURRENCY must be a positive integer, got "ten"');
  });
});

describe('log lines', () => {
  it('mask URL passwords and leave out tokens, passwords and Authorization headers', () => {
    const script = `
      import { createLogger } from '@werkpilot/shared';
      const log = createLogger({ level: 'info', name: 'redaction-test', pretty: false });
      log.info({ url: 'redis://:s3cret-url@h:6379', redisUrl: 'rediss://u:s3cret-redis@h', token: 's3cret-token' }, 'top level');
      log.info({ config: { redisUrl: 'redis://:s3cret-nested@h', dashboardToken: 's3cret-dash', dashboardPassword: 's3cret-pw' } }, 'nested');
      log.info({ req: { headers: { authorization: 'Bearer s3cret-bearer', cookie: 's3cret-cookie', accept: 'text/html' } } }, 'request');
      log.info({ password: 's3cret-password', port: 3001 }, 'plain');
    `;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(child.status, child.stderr).toBe(0);
    const lines = child.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, any>);
    expect(child.stdout).not.toMatch(/s3cret/);
    expect(lines[0]).toMatchObject({ url: 'redis://:***@h:6379', redisUrl: 'rediss://u:***@h', token: '[redacted]' });
    expect(lines[1]!.config).toEqual({ redisUrl: 'redis://:***@h', dashboardToken: '[redacted]', dashboardPassword: '[redacted]' });
    expect(lines[2]!.req.headers).toEqual({ authorization: '[redacted]', cookie: '[redacted]', accept: 'text/html' });
    expect(lines[3]).toMatchObject({ password: '[redacted]', port: 3001 });
  });
});
