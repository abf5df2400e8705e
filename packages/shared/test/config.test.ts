import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '@werkpilot/shared';

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

describe('configuration', () => {
  it('has the documented defaults', () => {
    expect(loadConfig({})).toMatchObject({
      redisUrl: 'redis://127.0.0.1:6379',
      prefix: 'werkpilot',
      agentsDir: 'examples/agents',
      port: 3001,
      workerHttpPort: 3002,
      workerConcurrency: 10,
      shutdownGraceMs: 30000,
      dlqRetain: 100,
      completedRetain: 1000,
      healthIntervalMs: 300000,
      memoryCheckIntervalMs: 60000,
      maxStalledCount: 2,
      bootRecheckMs: 5000,
      circuitWindowMs: 3_600_000,
      nightlyCron: '0 23 * * *',
      nightlyTz: 'Europe/Zurich',
      sseMaxClients: 100,
      logLevel: 'info',
      metricsAgentHistograms: true,
      metricsSnapshotMaxAgeMs: 2000,
    });
    expect(loadConfig({ SSE_MAX_CLIENTS: '5' }).sseMaxClients).toBe(5);
    expect(errorOf({ SSE_MAX_CLIENTS: '0' })).toBe('SSE_MAX_CLIENTS must be a positive integer, got "0"');
  });

  it('reads the shards: one by default, a scheduler’s own below the count', () => {
    expect(loadConfig({})).toMatchObject({ shards: 1, shard: undefined });
    expect(loadConfig({ WERKPILOT_SHARDS: '3', WERKPILOT_SHARD: '2' })).toMatchObject({ shards: 3, shard: 2 });
    expect(errorOf({ WERKPILOT_SHARDS: '0' })).toBe('WERKPILOT_SHARDS must be a whole number from 1 to 64, got "0"');
    expect(errorOf({ WERKPILOT_SHARDS: '3', WERKPILOT_SHARD: '3' })).toBe('WERKPILOT_SHARD must be below WERKPILOT_SHARDS (3): shards are numbered from 0, got 3');
    expect(errorOf({ WERKPILOT_SHARD: 'one' })).toBe('WERKPILOT_SHARD must be a whole number from 0 to 63, got "one"');
  });

  it('reads the metrics settings', () => {
    expect(loadConfig({ METRICS_AGENT_HISTOGRAMS: 'false', METRICS_SNAPSHOT_MAX_AGE_MS: '0' })).toMatchObject({ metricsAgentHistograms: false, metricsSnapshotMaxAgeMs: 0 });
    expect(loadConfig({ METRICS_AGENT_HISTOGRAMS: '1' }).metricsAgentHistograms).toBe(true);
    expect(errorOf({ METRICS_AGENT_HISTOGRAMS: 'maybe' })).toBe('METRICS_AGENT_HISTOGRAMS must be true or false, got "maybe"');
    expect(errorOf({ METRICS_SNAPSHOT_MAX_AGE_MS: '90000' })).toBe('METRICS_SNAPSHOT_MAX_AGE_MS must be a whole number of milliseconds from 0 to 60000, got "90000"');
  });

  it('names the variable, the value and what is allowed', () => {
    expect(errorOf({ WORKER_CONCURRENCY: 'ten' })).toBe('WORKER_CONCURRENCY must be a positive integer, got "ten"');
    expect(errorOf({ WORKER_CONCURRENCY: '0' })).toBe('WORKER_CONCURRENCY must be a positive integer, got "0"');
    expect(errorOf({ PORT: '70000' })).toMatch(/^PORT must be a port number from 0 to 65535, got "70000"$/);
    expect(errorOf({ REDIS_URL: 'http://x' })).toMatch(/^REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/);
    expect(errorOf({ LOG_LEVEL: 'loud' })).toMatch(/^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"$/);
    expect(errorOf({ NIGHTLY_TZ: 'Nowhere/City' })).toMatch(/^NIGHTLY_TZ must be an IANA time zone/);
    expect(errorOf({ NIGHTLY_CRON: 'every night' })).toMatch(/^NIGHTLY_CRON must be a 5- or 6-field cron expression/);
    expect(errorOf({ WERKPILOT_PREFIX: '{bad}' })).toMatch(/^WERKPILOT_PREFIX must be letters/);
  });

  it('refuses a duration no timer can wait for (over 2^31 − 1 ms), which would fire at once', () => {
    expect(errorOf({ SHUTDOWN_GRACE_MS: '2147483648' })).toBe('SHUTDOWN_GRACE_MS must be a whole number of milliseconds from 0 to 2147483647, got "2147483648"');
    expect(errorOf({ HEALTH_INTERVAL_MS: '99999999999' })).toBe('HEALTH_INTERVAL_MS must be a whole number of milliseconds from 100 to 2147483647, got "99999999999"');
    expect(loadConfig({ LOCK_DURATION_MS: '2147483647', MAX_STALLED_COUNT: '5', BOOT_RECHECK_MS: '1000' })).toMatchObject({
      lockDurationMs: 2147483647,
      maxStalledCount: 5,
      bootRecheckMs: 1000,
    });
  });

  it('reports several bad variables on one line', () => {
    const message = errorOf({ WORKER_CONCURRENCY: 'ten', DLQ_RETAIN: '-1' });
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toContain('WORKER_CONCURRENCY');
    expect(message).toContain('DLQ_RETAIN');
  });

  it('accepts rediss:// URLs with passwords', () => {
    expect(loadConfig({ REDIS_URL: 'rediss://:s3cret@redis.example:6380/1' }).redisUrl).toBe('rediss://:s3cret@redis.example:6380/1');
  });

  it('needs dashboard user and password together', () => {
    expect(errorOf({ DASHBOARD_USER: 'ops' })).toBe('DASHBOARD_USER and DASHBOARD_PASSWORD must be set together (or neither)');
  });

  it('turns tracing on only with an OTLP endpoint, from the standard OpenTelemetry variables', () => {
    expect(loadConfig({}).tracing).toBeUndefined();
    expect(loadConfig({ OTEL_SERVICE_NAME: 'crm' }).tracing).toBeUndefined();
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracing).toEqual({ endpoint: 'http://collector:4318/v1/traces', protocol: 'http/protobuf' });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector/otlp/', OTEL_SERVICE_NAME: 'crm', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).tracing).toEqual({
      endpoint: 'https://collector/otlp/v1/traces',
      protocol: 'http/json',
      serviceName: 'crm',
    });
    // The signal's own endpoint is used as given, and its own protocol wins.
    expect(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:4318/traces',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      }).tracing,
    ).toEqual({ endpoint: 'http://b:4318/traces', protocol: 'http/json' });
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' }).tracing).toBeUndefined();
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none' }).tracing).toBeUndefined();
  });

  it('names the tracing variable that is wrong, with the other problems on the same line', () => {
    expect(errorOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toBe(
      'OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// or https:// URL such as http://otel-collector:4318, got "collector:4318"',
    );
    expect(errorOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toBe(
      'OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or http/json (OTLP over HTTP, a collector\'s port 4318; gRPC is not built in), got "grpc"',
    );
    expect(errorOf({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces', OTEL_TRACES_EXPORTER: 'zipkin', WORKER_CONCURRENCY: 'ten' })).toBe(
      'WORKER_CONCURRENCY must be a positive integer, got "ten"; OTEL_TRACES_EXPORTER must be otlp or none, got "zipkin"',
    );
  });
});
