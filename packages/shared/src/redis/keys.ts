import { createHash } from 'node:crypto';

/**
 * Every Redis key name is built here, from the prefix.
 *
 * All keys — BullMQ's (through its `prefix` option) and ours — share one Redis Cluster hash tag,
 * `{<prefix>}`, so every multi-key Lua script (ours and BullMQ's together) stays within one slot.
 * Pub/sub channels are not keys and carry the plain prefix. With several shards (shards.ts) each
 * has its own prefix, so its own slot; the event bus's channel stays the fleet's (`busPrefix`), so
 * agents' topics and the live event stream reach across shards.
 */
export interface Keys {
  readonly prefix: string;
  /** BullMQ's `prefix` option: queues become `{prefix}:<queue>:...`. */
  readonly bullPrefix: string;
  /** Pub/sub channel of the event bus. */
  readonly eventsChannel: string;
  /** Capped stream keeping the recent bus history. */
  readonly eventsStream: string;
  /** Hash of an agent's counters and last-run fields. */
  agentStats(agent: string): string;
  /** List of an agent's most recent run durations (ms), newest first. */
  agentDurations(agent: string): string;
  /** List of an agent's most recent outcomes (`s`, `f`), newest first. */
  agentOutcomes(agent: string): string;
  /**
   * Counter bumped by every change of gate state (enabled flags, boot verdicts, health ratings,
   * circuit states). Workers cache that state and check this one key per run (gate-cache.ts).
   */
  readonly gateEpoch: string;
  /** A key of BullMQ's (queue `<queue>`), as BullMQ builds it: `{prefix}:<queue>:<suffix>`. */
  bull(queue: string, suffix: string): string;
  /** Any other key of ours, under the same hash tag: `{prefix}:<parts joined by :>`. */
  key(...parts: string[]): string;
}

const PREFIX_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export function isValidPrefix(prefix: string): boolean {
  return PREFIX_PATTERN.test(prefix);
}

export function createKeys(prefix: string, busPrefix = prefix): Keys {
  if (!isValidPrefix(prefix)) {
    throw new Error(`invalid key prefix "${prefix}": use letters, digits, '.', '_' or '-'`);
  }
  const tag = `{${prefix}}`;
  const key = (...parts: string[]) => [tag, ...parts].join(':');
  return {
    prefix,
    bullPrefix: tag,
    eventsChannel: `${busPrefix}:events`,
    eventsStream: key('events'),
    agentStats: (agent) => key('agent', agent, 'stats'),
    agentDurations: (agent) => key('agent', agent, 'durations'),
    agentOutcomes: (agent) => key('agent', agent, 'outcomes'),
    gateEpoch: key('gate', 'epoch'),
    bull: (queue, suffix) => `${tag}:${queue}:${suffix}`,
    key,
  };
}

/*
 * The keys (and channels) of each capability, grouped by the module that owns the data. Their
 * modules import them from here, so a reader finds every name the orchestrator writes in one file.
 */

// agent-toggle

/** The set of disabled agent names (the Prometheus scrape reads it in its one pipeline). */
export const disabledSet = (keys: Keys) => keys.key('agents', 'disabled');

// schedule-pause

/** The set of agents whose schedule is paused. */
export const pausedSchedulesSet = (keys: Keys) => keys.key('schedules', 'paused');

// boot

/** Hash agent → AgentBootState (JSON). Written only through bootStateWriter, which bumps the gate epoch. */
export const bootKey = (keys: Keys) => keys.key('boot');

// boot-healer

/** The on-demand requests: agent → the request's sequence number. */
export const bootRequestsKey = (keys: Keys) => keys.key('boot', 'requests');

/** The counter that numbers on-demand boot requests. */
export const bootRequestSequenceKey = (keys: Keys) => keys.key('boot', 'request-seq');

// health

/** The agent's health hash: state, reasons (JSON array), checkedAt (ms). */
export function healthKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'health');
}

// circuit-breaker

/** The agent's circuit hash: state, openedAt, openCount, trialRunId, trialStartedAt, restartsTotal. */
export function circuitKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'circuit');
}

/** Sorted set of the agent's restarts in the rolling window, scored by when they happened (ms). */
export function restartsKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'restarts');
}

// nightly

/** Hash of how many of an agent's runs each dependency caused to be skipped (cumulative). */
export function skipCausesKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'skip-causes');
}

// overlap

/** The agent's run lease (overlap `skip`/`queue`/...), per key value for a keyed agent. */
export function leaseKey(keys: Keys, agent: string, keyValue?: string): string {
  return withKeyValue(keys, [agent, 'lease'], keyValue);
}

/** The runs parked for the lease. */
export function leaseWaitersKey(keys: Keys, agent: string, keyValue?: string): string {
  return withKeyValue(keys, [agent, 'lease-waiters'], keyValue);
}

// concurrency-slots

/**
 * `agent:<name>:<kind>`, or `agent:<name>:<kind>:<key value>` for a keyed agent: the lease
 * (`overlap.ts`'s leaseKey is the unkeyed one), its waiters, the slots and their waiters. A key
 * value is never empty, so a keyed key never equals an unkeyed one.
 */
function withKeyValue(keys: Keys, [agent, kind]: [string, string], keyValue: string | undefined): string {
  return keyValue === undefined ? keys.key('agent', agent, kind) : keys.key('agent', agent, kind, keyValue);
}

export function slotsKey(keys: Keys, agent: string, keyValue?: string): string {
  return withKeyValue(keys, [agent, 'slots'], keyValue);
}

export function slotWaitersKey(keys: Keys, agent: string, keyValue?: string): string {
  return withKeyValue(keys, [agent, 'slot-waiters'], keyValue);
}

/** Per keyed agent: runs holding a slot under any key value (score: when the hold expires). */
export function runningIndexKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'running');
}

/** Per keyed agent: runs waiting for a slot under any key value (score: when the wait record expires). */
export function waitingIndexKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'waiting');
}

// rate-limits

/** The agent's own rate-limit log, per key value for a keyed limit. */
export function agentRateKey(keys: Keys, agent: string, keyValue?: string): string {
  return keyValue === undefined ? keys.key('rate', 'agent', agent) : keys.key('rate', 'agent', agent, keyValue);
}

/** A shared limiter's log (defineLimiter). */
export function limiterKey(keys: Keys, limiter: string): string {
  return keys.key('rate', 'limiter', limiter);
}

/** Per agent: runs parked until their tokens are due (score: that time). */
export function rateWaitingKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'rate-waiting');
}

// prometheus-metrics

/**
 * The hash where versions before the one-script run path kept each agent's exported figures
 * (duration buckets, sum, retries, timeout and cancelled counts; both of the latter were also
 * counted in `failures`). Those figures now live in the agent's stats hash (agent-state.ts); the
 * scrape adds this frozen hash to them so the counters carry on across the upgrade.
 */
export function runMetricsKey(keys: Keys, agent: string): string {
  return keys.key('agent', agent, 'run-metrics');
}

// dependency-waits

/** A run's finished marker (`ok`, `dlq:...`, ...), for the dependents of its tick or pipeline. */
export function runDoneKey(keys: Keys, runId: string): string {
  return keys.key('run', runId, 'done');
}

/** Hash of the runs waiting for run `runId` (field: waiter's run id, value: its priority). */
export function runWaitersKey(keys: Keys, runId: string): string {
  return keys.key('run', runId, 'waiters');
}

/** Hash of every parked dependent's count of dependency runs it still waits for. */
export function pendingCountsKey(keys: Keys): string {
  return keys.key('runs', 'pending');
}

/** Hash agent → `<runId>|<outcome>` that versions before `lastRun` in the stats hash kept; still read. */
export function legacyLastRunKey(keys: Keys): string {
  return keys.key('agents', 'last-run');
}

// pipeline

/** A pipeline's record: its root, agents and start (kept for PIPELINE_TTL_SECONDS). */
export const pipelineKey = (keys: Keys, pipelineId: string) => keys.key('pipeline', pipelineId);

// idempotent-triggers

/** Where a key's claim lives: per agent, the key hashed (any length or character stays one short Redis key). */
export function idempotencyKeyOf(keys: Keys, agent: string, key: string): string {
  return keys.key('idempotency', agent, createHash('sha256').update(key).digest('hex').slice(0, 32));
}

// heartbeat

/** The live set: a sorted set of worker ids scored by when their heartbeat expires (ms). */
export function liveWorkersKey(keys: Keys): string {
  return keys.key('workers');
}

/** One worker's latest heartbeat (JSON), with a TTL so a crashed worker's record disappears. */
export function workerKey(keys: Keys, workerId: string): string {
  return keys.key('worker', workerId);
}

// leader

/** The leader lease: the holding replica's id, with a TTL. */
export function leaderKey(keys: Keys): string {
  return keys.key('scheduler', 'leader');
}

// snapshot-changes

/** Sorted set: agent → the sequence number of its latest change. */
export function changedAgentsKey(keys: Keys): string {
  return keys.key('snapshot', 'changed');
}

/** Counter behind the change sequence. */
export function changeSequenceKey(keys: Keys): string {
  return keys.key('snapshot', 'sequence');
}

/** Hash: part (`health`, `boot`) → generation, bumped whenever that part is rewritten. */
export function snapshotGenerationsKey(keys: Keys): string {
  return keys.key('snapshot', 'generations');
}

// reports

/** Hash of reports by id (JSON). */
export function reportsKey(keys: Keys): string {
  return keys.key('reports');
}

/** Sorted set of report ids by generation time (ms): the retention index. */
export function reportsIndexKey(keys: Keys): string {
  return keys.key('reports', 'index');
}

// rpc

/** The request list of `agent`. */
export function rpcRequestsKey(keys: Keys, agent: string): string {
  return keys.key('rpc', agent, 'requests');
}

/** The pub/sub channel (not a key) on which a client receives its replies. */
export function rpcReplyChannel(keys: Keys, clientId: string): string {
  return `${keys.prefix}:rpc:reply:${clientId}`;
}

// run-cancel

/** Where the worker that owns a run being cancelled acknowledges it (one per cancel, short-lived). */
export function cancelAckKey(keys: Keys, cancelId: string): string {
  return keys.key('cancel', cancelId, 'ack');
}

/** The control channel (not a key) on which cancel requests reach every worker. */
export function cancelChannel(keys: Keys): string {
  return `${keys.prefix}:control:cancel`;
}

// tick-runs

/** Marks that the late tick `runId` queued its catch-up chain already (so a retry does not queue it twice). */
export function catchUpMarkerKey(keys: Keys, runId: string): string {
  return keys.key('catch-up', runId);
}

// run-rollups

/** The agent's rollup hash for the UTC hour `hour` (ms since epoch / 1 h). */
export function rollupKey(keys: Keys, agent: string, hour: number): string {
  return keys.key('agent', agent, 'rollup', String(hour));
}

/** The hour (UTC, ms / 1 h) up to which the nightly sweep has deleted rollups: each night resumes there. */
export function rollupSweptKey(keys: Keys): string {
  return keys.key('rollup', 'swept');
}

// shard-layout

/** The fleet's shard layout (WERKPILOT_SHARDS and the prefixes), under the fleet prefix's own tag. */
export function shardLayoutKey(fleetKeys: Keys): string {
  return fleetKeys.key('shards', 'layout');
}
