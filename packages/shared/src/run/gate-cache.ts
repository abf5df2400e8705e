import type { Redis } from 'ioredis';
import type { AgentBootState } from '../self-healing/boot.js';
import type { CircuitState } from '../self-healing/circuit-breaker.js';
import type { AgentGateState, GateView } from './gating.js';
import type { HealthState } from '../self-healing/health-rating.js';
import { bootKey, circuitKey, disabledSet, healthKey, type Keys, pausedSchedulesSet } from '../redis/keys.js';

/**
 * Each worker's copy of the gate state (enabled flags, paused schedules, boot verdicts, health
 * ratings, circuit states), so that evaluating the gate costs no Redis reads on the run's path.
 *
 * It is exact, not eventually consistent: every writer of that state bumps one counter, the gate
 * epoch (keys.gateEpoch), in the same step as its change (agent-toggle.ts, boot.ts, health.ts,
 * circuit-breaker.ts), and run admission's script compares the epoch the cache was loaded at with
 * the current one before it lets the run start (one GET). A mismatch sends the worker back to
 * reload the agents it needs (one MULTI that reads the epoch with them) and ask again. The state
 * changes rarely — operator actions, boots, health changes of unhealthy agents, circuit transitions
 * — so nearly every run is admitted on the cached state. This was chosen over invalidating a cache
 * through bus events: pub/sub can drop messages across a reconnect and races the job that follows
 * an operator's change, while the epoch costs one command per run and is never stale.
 *
 * Agents are loaded on first use (the run's agent and its dependencies), never the whole registry.
 * `maxAgeMs` reloads an entry that old anyway: a safety net for a writer that forgot the epoch.
 */
export interface GateCacheOptions {
  redis: Redis;
  keys: Keys;
  clock?: () => number;
  /** Default 60 s. */
  maxAgeMs?: number;
}

interface Entry {
  state: AgentGateState;
  loadedAt: number;
}

const UNRATED: AgentGateState['health'] = { state: null, reasons: [], checkedAt: null };

export class GateCache implements GateView {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly clock: () => number;
  private readonly maxAgeMs: number;
  private readonly entries = new Map<string, Entry>();
  private epochValue = '';

  constructor({ redis, keys, clock = Date.now, maxAgeMs = 60_000 }: GateCacheOptions) {
    this.redis = redis;
    this.keys = keys;
    this.clock = clock;
    this.maxAgeMs = maxAgeMs;
  }

  /** The gate epoch the cached entries were read at ('' before any load, or while Redis has none). */
  get epoch(): string {
    return this.epochValue;
  }

  of(agent: string): AgentGateState {
    const entry = this.entries.get(agent);
    if (!entry) throw new Error(`gate state of ${agent} not loaded: call GateCache.ensure first`);
    return entry.state;
  }

  /** Whether every one of `agents` is cached and young enough (no Redis call). */
  has(agents: readonly string[]): boolean {
    const oldest = this.clock() - this.maxAgeMs;
    for (const agent of agents) {
      const entry = this.entries.get(agent);
      if (!entry || entry.loadedAt < oldest) return false;
    }
    return true;
  }

  /** The epoch moved on (run admission saw `current`): everything cached is stale. */
  invalidate(current: string): void {
    if (current === this.epochValue) return;
    this.entries.clear();
  }

  /**
   * Loads `agents` (one MULTI, read together with the epoch, so the entries and the epoch they are
   * checked against are one consistent snapshot). Entries of an older epoch are dropped.
   */
  async load(agents: readonly string[]): Promise<void> {
    const multi = this.redis.multi();
    multi.get(this.keys.gateEpoch);
    multi.smismember(disabledSet(this.keys), ...agents);
    multi.hmget(bootKey(this.keys), ...agents);
    multi.smismember(pausedSchedulesSet(this.keys), ...agents);
    for (const agent of agents) {
      multi.hmget(healthKey(this.keys, agent), 'state', 'reasons', 'checkedAt');
      multi.hget(circuitKey(this.keys, agent), 'state');
    }
    const replies = await multi.exec();
    if (!replies) throw new Error('gate state read was aborted');
    const value = (i: number) => {
      const [err, reply] = replies[i]!;
      if (err) throw err;
      return reply;
    };
    const epoch = (value(0) as string | null) ?? '';
    if (epoch !== this.epochValue) {
      this.entries.clear();
      this.epochValue = epoch;
    }
    const disabled = value(1) as number[];
    const boots = value(2) as (string | null)[];
    const paused = value(3) as number[];
    const loadedAt = this.clock();
    agents.forEach((agent, i) => {
      const [health, reasons, checkedAt] = value(4 + i * 2) as (string | null)[];
      const circuit = value(5 + i * 2) as string | null;
      this.entries.set(agent, {
        loadedAt,
        state: {
          isDisabled: disabled[i] === 1,
          isSchedulePaused: paused[i] === 1,
          boot: boots[i] ? (JSON.parse(boots[i]!) as AgentBootState) : undefined,
          health: health
            ? { state: health as HealthState, reasons: reasons ? (JSON.parse(reasons) as string[]) : [], checkedAt: checkedAt ? new Date(Number(checkedAt)).toISOString() : null }
            : UNRATED,
          circuit: (circuit as CircuitState | null) ?? 'closed',
        },
      });
    });
  }
}
