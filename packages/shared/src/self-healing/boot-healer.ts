import type { Redis, Result } from 'ioredis';
import type { Logger } from 'pino';
import { DEFAULT_BOOT_RECHECK_MS, blockingReason, bootStateWriter, checkedState, readBootStates, withBootChecks, type AgentBootState, type BootDeps } from './boot.js';
import { NotLeaderError } from '../process/errors.js';
import { bootRequestSequenceKey, bootRequestsKey, type Keys } from '../redis/keys.js';
import { defineScripts } from '../redis/redis-scripts.js';
import { joinSkipReasons, uniqueSkipReasons, type SkipReason } from '../run/skip-reasons.js';

/**
 * A failed boot heals. After the leader's boot, this loop (leader only) re-checks:
 * - `failed` and `unchecked` agents, when their backoff is due (`BOOT_RECHECK_MS`, doubling up to
 *   5 min; the state shows `failedChecks` and `nextCheckAt`);
 * - agents the boot left undecided (`checking`, or none: a boot cut short by a Redis outage);
 * - any agent an operator asked for (`POST /api/agents/:name/boot`, `werkpilot boot <agent>`).
 * Each round visits its agents and their transitive dependents in layer order, so the dependents
 * of an agent that passes are checked in the same round and unblock as soon as they pass too; a
 * dependent of an agent that now fails is blocked. A state only changes through a check (or a
 * block), never to `checking` while a dependent's runs read it.
 *
 * Rounds never overlap; each starts with the lease check and every write is fenced (boot.ts).
 */

export interface BootHealerOptions extends BootDeps {
  /** Asked before each round: the leader lease check. */
  canAct: () => Promise<boolean>;
  /** How often due agents and requests are looked for. Default 1000. */
  tickMs?: number;
  /**
   * Whether any worker is alive (heartbeat.ts). Without one a check could only wait for its pickup
   * timeout, so rounds (and the requests they would take) wait for a worker instead.
   */
  hasLiveWorker?: () => Promise<boolean>;
}

/**
 * Invariant: every request gets a higher number than any before it, and a request stored for an
 * agent is never lower than one already stored (INCR then HSET in one script), so a client waiting
 * for `requestSeq >= its number` is answered by the check that took its request or a later one.
 * KEYS: sequence counter, requests hash. ARGV: agent. Returns the request's number.
 */
const REQUEST_LUA = `
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], seq)
return seq
`;

/** Takes every pending request at once, so one arriving meanwhile is not lost between read and delete. KEYS: requests hash. */
const TAKE_REQUESTS_LUA = `
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    werkpilotRequestBootCheck(sequence: string, requests: string, agent: string): Result<number, Context>;
    werkpilotTakeBootRequests(requests: string): Result<string[], Context>;
  }
}

function defineCommands(redis: Redis): void {
  defineScripts(redis, { 'werkpilotRequestBootCheck-2': REQUEST_LUA, 'werkpilotTakeBootRequests-1': TAKE_REQUESTS_LUA });
}

/**
 * Asks the leader (whichever replica it is) to boot-check `agent` again. Returns the request's
 * number: the agent's boot state carries `requestSeq` ≥ it once a check (or a block) answered it.
 */
export async function requestBootCheck({ redis, keys }: { redis: Redis; keys: Keys }, agent: string): Promise<number> {
  defineCommands(redis);
  return redis.werkpilotRequestBootCheck(bootRequestSequenceKey(keys), bootRequestsKey(keys), agent);
}

export class BootHealer {
  private readonly options: BootHealerOptions;
  private readonly log: Logger;
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<unknown> | undefined;
  /** The boot states as this leader last read or wrote them (only the leader writes them). */
  private view: Map<string, AgentBootState> | undefined;

  constructor(options: BootHealerOptions) {
    this.options = options;
    this.log = options.log.child({ component: 'boot-healer' });
    this.clock = options.clock ?? Date.now;
    defineCommands(options.redis);
  }

  /** Starts looking every tick (after the leader's boot: it reads the states that boot left). */
  start(): void {
    if (this.timer) return;
    this.view = undefined;
    this.timer = setInterval(() => {
      if (this.round) return;
      this.round = this.heal()
        .catch((err: unknown) => {
          if (err instanceof NotLeaderError) this.log.warn({ err }, err.message);
          else this.log.warn({ err }, 'boot re-check round failed; retrying');
          this.view = undefined; // read again: a round cut short may have written part of its outcome
        })
        .finally(() => (this.round = undefined));
    }, this.options.tickMs ?? 1000);
    this.timer.unref();
  }

  /** Stops looking; a round in flight ends on its own (its writes are fenced). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One round now: the agents due, requested or left undecided, and their dependents. Returns the agents it decided. */
  async heal(): Promise<string[]> {
    const o = this.options;
    if (!(await o.canAct())) return [];
    if (o.hasLiveWorker && !(await o.hasLiveWorker())) return [];
    const taken = await o.redis.werkpilotTakeBootRequests(bootRequestsKey(o.keys));
    const requests = new Map<string, number>();
    for (let i = 0; i + 1 < taken.length; i += 2) {
      if (o.registry.get(taken[i]!)) requests.set(taken[i]!, Number(taken[i + 1]));
    }
    this.view ??= await readBootStates(o);
    const view = this.view;
    const now = this.clock();
    const targets = new Set(requests.keys());
    for (const spec of o.registry.list()) {
      const state = view.get(spec.name);
      if (!state || state.status === 'checking') targets.add(spec.name);
      else if ((state.status === 'failed' || state.status === 'unchecked') && Date.parse(state.nextCheckAt ?? '') <= now) targets.add(spec.name);
      else if (state.status === 'blocked' && this.blockersOf(spec.name, view).length === 0) targets.add(spec.name);
    }
    if (targets.size === 0) return [];
    return this.recheck(targets, requests, view);
  }

  private async recheck(targets: Set<string>, requests: Map<string, number>, view: Map<string, AgentBootState>): Promise<string[]> {
    const o = this.options;
    // The targets and everything depending on them, in one pass over the layers (a dependency is
    // always in an earlier layer than its dependents).
    const closure = new Set(targets);
    for (const layer of o.registry.layers) {
      for (const agent of layer) {
        if (o.registry.require(agent).dependsOn.some((dep) => closure.has(dep))) closure.add(agent);
      }
    }
    const writer = bootStateWriter(o);
    const decided: string[] = [];
    const record = async (agent: string, state: AgentBootState) => {
      await writer.record(agent, state, { recheck: true });
      const before = view.get(agent);
      view.set(agent, state);
      decided.push(agent);
      if (before?.status !== state.status) {
        this.log.info({ agent, from: before?.status ?? null, to: state.status, reason: state.reason }, `boot re-check: ${agent} ${before?.status ?? 'undecided'} → ${state.status}`);
      }
    };
    await withBootChecks(o, `recheck-${this.clock()}`, async (check) => {
      for (const [layer, agents] of o.registry.layers.entries()) {
        await Promise.all(
          agents
            .filter((agent) => closure.has(agent))
            .map(async (agent) => {
              const current = view.get(agent);
              const requestSeq = requests.get(agent);
              const blockers = this.blockersOf(agent, view);
              if (blockers.length > 0) {
                const reason = joinSkipReasons(blockers);
                if (current?.status === 'blocked' && current.reason === reason && requestSeq === undefined) return;
                await record(agent, { status: 'blocked', layer, reason, at: new Date(this.clock()).toISOString(), ...(requestSeq !== undefined ? { requestSeq } : {}) });
                return;
              }
              // A dependent that passed its own check before stays as it is.
              if (!targets.has(agent) && current?.status === 'ok') return;
              const startedAt = this.clock();
              const outcome = await check(agent);
              const now = this.clock();
              const recheckBaseMs = o.recheckBaseMs ?? DEFAULT_BOOT_RECHECK_MS;
              await record(agent, checkedState(outcome, current, { layer, now, durationMs: now - startedAt, recheckBaseMs, ...(requestSeq !== undefined ? { requestSeq } : {}) }));
            }),
        );
      }
    });
    return decided;
  }

  private blockersOf(agent: string, view: Map<string, AgentBootState>): SkipReason[] {
    const spec = this.options.registry.require(agent);
    return uniqueSkipReasons(spec.dependsOn.flatMap((dep) => blockingReason(dep, view.get(dep))));
  }
}
