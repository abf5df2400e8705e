/**
 * Every Redis key name is built here, from the prefix.
 *
 * All keys — BullMQ's (through its `prefix` option) and ours — share one Redis Cluster hash tag,
 * `{<prefix>}`, so every multi-key Lua script (ours and BullMQ's together) stays within one slot.
 * Pub/sub channels are not keys and carry the plain prefix.
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

export function createKeys(prefix: string): Keys {
  if (!isValidPrefix(prefix)) {
    throw new Error(`invalid key prefix "${prefix}": use letters, digits, '.', '_' or '-'`);
  }
  const tag = `{${prefix}}`;
  const key = (...parts: string[]) => [tag, ...parts].join(':');
  return {
    prefix,
    bullPrefix: tag,
    eventsChannel: `${prefix}:events`,
    eventsStream: key('events'),
    agentStats: (agent) => key('agent', agent, 'stats'),
    agentDurations: (agent) => key('agent', agent, 'durations'),
    agentOutcomes: (agent) => key('agent', agent, 'outcomes'),
    gateEpoch: key('gate', 'epoch'),
    bull: (queue, suffix) => `${tag}:${queue}:${suffix}`,
    key,
  };
}
