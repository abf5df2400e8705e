import { z } from 'zod';
import { ConfigError } from './errors.js';
import { cronProblem, timezoneProblem } from '../agents/cron.js';
import { isValidPrefix } from '../redis/keys.js';
import { hideUrlUserInfo } from '../observability/redaction.js';
import { MAX_TIMER_MS } from '../run/size-limits.js';
import { tracingSettings, type TracingSettings } from '../observability/tracing.js';
import { parseRedisNodes, type RedisTarget } from '../redis/redis-target.js';

/**
 * Process configuration, read from the environment and validated in one place.
 * Every problem names the variable, the value it got and what is allowed.
 */
export interface Config {
  redisUrl: string;
  /**
   * Where Redis is: `REDIS_URL` (the default), or a Sentinel set or a Redis Cluster instead
   * (redis-target.ts). Every connection is built from this, never from `redisUrl` directly.
   */
  redisTarget: RedisTarget;
  prefix: string;
  /**
   * WERKPILOT_SHARDS: how many shards (key prefixes, so hash-tag slots) the agents are spread over,
   * by dependency component (shard-placement.ts). 1 keeps every key under `{prefix}`.
   */
  shards: number;
  /** WERKPILOT_SHARD: the shard a scheduler plans and serves (required with more than one shard). */
  shard: number | undefined;
  agentsDir: string;
  port: number;
  workerHttpPort: number;
  workerConcurrency: number;
  shutdownGraceMs: number;
  dlqRetain: number;
  completedRetain: number;
  healthIntervalMs: number;
  memoryCheckIntervalMs: number;
  /** How often a worker writes its heartbeat; it expires after 3 × this. */
  heartbeatIntervalMs: number;
  /** BullMQ lockDuration of agent runs: a run whose worker died is recovered after about this plus the stalled interval. */
  lockDurationMs: number;
  /** BullMQ stalledInterval: how often workers look for runs whose lock expired. */
  stalledIntervalMs: number;
  /** BullMQ maxStalledCount: stalls a run survives; the next one dead-letters it. */
  maxStalledCount: number;
  /** Scheduler leader lease: a dead leader is replaced within this (plus one retry, a third of it). */
  leaderLeaseMs: number;
  /** How long the health monitor waits for an agent's healthCheck on a worker. */
  healthCheckTimeoutMs: number;
  /** First boot re-check of an agent that failed its boot check after this, doubling up to 5 min. */
  bootRecheckMs: number;
  /**
   * The circuit breaker's rolling window: `maxRestartsPerHour` counts restarts over this (one hour
   * unless shortened, e.g. by end-to-end tests that watch a circuit close on the real clock).
   */
  circuitWindowMs: number;
  nightlyCron: string;
  nightlyTz: string;
  /**
   * Per-agent run-duration histograms on the scheduler's /metrics (18 series per agent). The
   * histograms by priority are always exported.
   */
  metricsAgentHistograms: boolean;
  /** How old the cluster snapshot behind /metrics and /api/metrics may be when served. */
  metricsSnapshotMaxAgeMs: number;
  dashboardToken: string | undefined;
  dashboardUser: string | undefined;
  dashboardPassword: string | undefined;
  /** Live event streams (`GET /api/events`) one scheduler serves at once. */
  sseMaxClients: number;
  /** How long an idempotency key of a manual trigger answers with its first run (`Idempotency-Key`). */
  idempotencyTtlMs: number;
  logLevel: LogLevel;
  /**
   * OpenTelemetry tracing (tracing.ts), from the standard OTEL_* variables: undefined (off) unless
   * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
   */
  tracing: TracingSettings | undefined;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

type Env = Record<string, string | undefined>;

interface Variable<T> {
  name: string;
  default: T;
  schema: z.ZodType<T>;
  /** What is allowed, for the error message: "must be <allowed>". */
  allowed: string;
  /** How a bad value appears in the error message (default: quoted); secrets are never shown. */
  shown?: (raw: string) => string;
}

/** A secret's bad value is described, never shown: error messages end up in logs. */
const secretShown = (raw: string) => `a value of ${raw.length} characters (not shown: it is a secret)`;

/** More shards than this would be more schedulers than anyone runs; one master holds many slots anyway. */
export const MAX_SHARDS = 64;

const intString = (min: number, max = Number.MAX_SAFE_INTEGER) => z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(min).max(max));

function intVar(name: string, dflt: number, min: number, allowed: string, max?: number): Variable<number> {
  return { name, default: dflt, schema: intString(min, max) as unknown as z.ZodType<number>, allowed };
}

/**
 * A duration that some timer waits for: capped at 2^31 − 1 ms, since Node fires a longer timer at
 * once (a SHUTDOWN_GRACE_MS of 30 days would skip the grace instead of lengthening it).
 */
function msVar(name: string, dflt: number, min: number): Variable<number> {
  return intVar(name, dflt, min, `a whole number of milliseconds from ${min} to ${MAX_TIMER_MS}`, MAX_TIMER_MS);
}

function stringVar(name: string, dflt: string, allowed: string, check: (v: string) => boolean): Variable<string> {
  return { name, default: dflt, schema: z.string().refine(check) as unknown as z.ZodType<string>, allowed };
}

function booleanVar(name: string, dflt: boolean): Variable<boolean> {
  return {
    name,
    default: dflt,
    schema: z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1') as unknown as z.ZodType<boolean>,
    allowed: 'true or false',
  };
}

function optionalVar(name: string, { isSecret = false } = {}): Variable<string | undefined> {
  return {
    name,
    default: undefined,
    schema: z.string().min(1) as unknown as z.ZodType<string | undefined>,
    allowed: 'a non-empty string',
    ...(isSecret ? { shown: secretShown } : {}),
  };
}

const isRedisUrl = (v: string) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'redis:' || u.protocol === 'rediss:') && u.hostname !== '';
  } catch {
    return false;
  }
};

const VARIABLES = {
  redisUrl: {
    ...stringVar('REDIS_URL', 'redis://127.0.0.1:6379', 'a redis:// or rediss:// URL, e.g. redis://:password@host:6379/0', isRedisUrl),
    shown: (raw) => JSON.stringify(hideUrlUserInfo(raw)),
  },
  prefix: stringVar('WERKPILOT_PREFIX', 'werkpilot', "letters, digits, '.', '_' or '-' (no braces or colons)", isValidPrefix),
  shards: intVar('WERKPILOT_SHARDS', 1, 1, `a whole number from 1 to ${MAX_SHARDS}`, MAX_SHARDS),
  shard: { ...intVar('WERKPILOT_SHARD', 0, 0, `a whole number from 0 to ${MAX_SHARDS - 1}`, MAX_SHARDS - 1), default: undefined } as unknown as Variable<number | undefined>,
  agentsDir: stringVar('WERKPILOT_AGENTS', 'examples/agents', 'a directory of agent modules', (v) => v.trim() !== ''),
  port: intVar('PORT', 3001, 0, 'a port number from 0 to 65535', 65535),
  workerHttpPort: intVar('WORKER_HTTP_PORT', 3002, 0, 'a port number from 0 to 65535 (0 turns it off)', 65535),
  workerConcurrency: intVar('WORKER_CONCURRENCY', 10, 1, 'a positive integer'),
  shutdownGraceMs: msVar('SHUTDOWN_GRACE_MS', 30000, 0),
  dlqRetain: intVar('DLQ_RETAIN', 100, 1, 'a positive integer'),
  completedRetain: intVar('COMPLETED_RETAIN', 1000, 0, 'a whole number (0 or more)'),
  healthIntervalMs: msVar('HEALTH_INTERVAL_MS', 300000, 100),
  memoryCheckIntervalMs: msVar('MEMORY_CHECK_INTERVAL_MS', 60000, 100),
  heartbeatIntervalMs: msVar('HEARTBEAT_INTERVAL_MS', 5000, 100),
  lockDurationMs: msVar('LOCK_DURATION_MS', 30000, 1000),
  stalledIntervalMs: msVar('STALLED_INTERVAL_MS', 30000, 500),
  maxStalledCount: intVar('MAX_STALLED_COUNT', 2, 0, 'a whole number from 0 to 1000', 1000),
  leaderLeaseMs: intVar('LEADER_LEASE_MS', 10000, 300, 'a whole number of milliseconds from 300 to 15000', 15000),
  healthCheckTimeoutMs: msVar('HEALTH_CHECK_TIMEOUT_MS', 10000, 100),
  bootRecheckMs: msVar('BOOT_RECHECK_MS', 5000, 100),
  circuitWindowMs: msVar('CIRCUIT_WINDOW_MS', 3_600_000, 1000),
  nightlyCron: stringVar('NIGHTLY_CRON', '0 23 * * *', 'a 5- or 6-field cron expression', (v) => cronProblem(v) === null),
  nightlyTz: stringVar('NIGHTLY_TZ', 'Europe/Zurich', 'an IANA time zone such as Europe/Zurich', (v) => timezoneProblem(v) === null),
  metricsAgentHistograms: booleanVar('METRICS_AGENT_HISTOGRAMS', true),
  metricsSnapshotMaxAgeMs: intVar('METRICS_SNAPSHOT_MAX_AGE_MS', 2000, 0, 'a whole number of milliseconds from 0 to 60000', 60000),
  dashboardToken: optionalVar('DASHBOARD_TOKEN', { isSecret: true }),
  dashboardUser: optionalVar('DASHBOARD_USER'),
  dashboardPassword: optionalVar('DASHBOARD_PASSWORD', { isSecret: true }),
  sseMaxClients: intVar('SSE_MAX_CLIENTS', 100, 1, 'a positive integer'),
  idempotencyTtlMs: msVar('IDEMPOTENCY_TTL_MS', 86_400_000, 1000),
  logLevel: {
    name: 'LOG_LEVEL',
    default: 'info',
    schema: z.enum(LOG_LEVELS),
    allowed: `one of ${LOG_LEVELS.join(', ')}`,
  } as Variable<LogLevel>,
} satisfies { [K in Exclude<keyof Config, 'tracing' | 'redisTarget'>]: Variable<Config[K]> };

const NODE_LIST = 'a comma-separated list of host:port';

/**
 * The Redis target from REDIS_URL, REDIS_SENTINELS + REDIS_SENTINEL_NAME or REDIS_CLUSTER_NODES,
 * and REDIS_PASSWORD. Exactly one kind may be configured; a combination that would leave a process
 * guessing which one is meant is a problem, reported like any other bad variable.
 */
function redisTargetOf(env: Env, redisUrl: string, problems: string[]): RedisTarget | undefined {
  const value = (name: string) => {
    const raw = env[name]?.trim();
    return raw === undefined || raw === '' ? undefined : raw;
  };
  const url = value('REDIS_URL');
  const sentinels = value('REDIS_SENTINELS');
  const sentinelName = value('REDIS_SENTINEL_NAME');
  const clusterNodes = value('REDIS_CLUSTER_NODES');
  const password = env.REDIS_PASSWORD === '' ? undefined : env.REDIS_PASSWORD;
  const before = problems.length;
  const given = [url && 'REDIS_URL', sentinels && 'REDIS_SENTINELS', clusterNodes && 'REDIS_CLUSTER_NODES'].filter(Boolean);
  if (given.length > 1) problems.push(`${given.join(' and ')} must not be set together: set one of REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES`);
  if (sentinels && !sentinelName) problems.push('REDIS_SENTINELS needs REDIS_SENTINEL_NAME (the name the sentinels monitor the primary under)');
  if (sentinelName && !sentinels) problems.push('REDIS_SENTINEL_NAME is set but REDIS_SENTINELS is not: set both, or neither');
  if (password !== undefined && !sentinels && !clusterNodes) {
    problems.push('REDIS_PASSWORD goes with REDIS_SENTINELS or REDIS_CLUSTER_NODES; with REDIS_URL put it in the URL (redis://:password@host:6379)');
  }
  const sentinelNodes = sentinels === undefined ? undefined : parseRedisNodes(sentinels);
  if (sentinels !== undefined && !sentinelNodes) problems.push(`REDIS_SENTINELS must be ${NODE_LIST}, e.g. 10.0.0.1:26379,10.0.0.2:26379, got ${JSON.stringify(sentinels)}`);
  const nodes = clusterNodes === undefined ? undefined : parseRedisNodes(clusterNodes);
  if (clusterNodes !== undefined && !nodes) problems.push(`REDIS_CLUSTER_NODES must be ${NODE_LIST}, e.g. 10.0.0.1:6379,10.0.0.2:6379, got ${JSON.stringify(clusterNodes)}`);
  if (problems.length > before) return undefined;
  if (sentinelNodes && sentinelName) return { kind: 'sentinel', sentinels: sentinelNodes, name: sentinelName, password };
  if (nodes) return { kind: 'cluster', nodes, password };
  return { kind: 'single', url: redisUrl };
}

/**
 * Reads and validates the configuration. Throws one ConfigError listing every bad variable,
 * e.g. `WORKER_CONCURRENCY must be a positive integer, got "ten"`. Secrets are not echoed: a bad
 * DASHBOARD_TOKEN or DASHBOARD_PASSWORD is described by its length, a bad REDIS_URL shown without its
 * user and password.
 */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const config: Record<string, unknown> = {};
  for (const [field, variable] of Object.entries(VARIABLES) as [Exclude<keyof Config, 'tracing' | 'redisTarget'>, Variable<unknown>][]) {
    const raw = env[variable.name];
    if (raw === undefined || raw === '') {
      config[field] = variable.default;
      continue;
    }
    const parsed = variable.schema.safeParse(raw.trim());
    if (parsed.success) config[field] = parsed.data;
    else problems.push(`${variable.name} must be ${variable.allowed}, got ${(variable.shown ?? JSON.stringify)(raw)}`);
  }
  config.redisTarget = redisTargetOf(env, config.redisUrl as string, problems);
  try {
    config.tracing = tracingSettings(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(err.message);
  }
  const cfg = config as unknown as Config;
  if (problems.length === 0 && Boolean(cfg.dashboardUser) !== Boolean(cfg.dashboardPassword)) {
    problems.push('DASHBOARD_USER and DASHBOARD_PASSWORD must be set together (or neither)');
  }
  if (problems.length === 0 && cfg.shard !== undefined && cfg.shard >= cfg.shards) {
    problems.push(`WERKPILOT_SHARD must be below WERKPILOT_SHARDS (${cfg.shards}): shards are numbered from 0, got ${cfg.shard}`);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  return cfg;
}
