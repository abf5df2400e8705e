import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import { readProcessMemory, type ProcessMemory } from './process-memory.js';

/** Heap percentages (of the heap size limit) at which the monitor acts. */
export interface MemoryThresholds {
  /** At or above: run `global.gc()` (when exposed) and publish `memory:gc`. Default 80. */
  gcPercent: number;
  /** At or above: pressure — this worker hands back priority-3 runs. Default 90. */
  pressurePercent: number;
  /** Under this: pressure ends (`memory:recovered`). Default 70. */
  recoverPercent: number;
}

export const DEFAULT_MEMORY_THRESHOLDS: MemoryThresholds = { gcPercent: 80, pressurePercent: 90, recoverPercent: 70 };

/** The lowest priority (3, "normal") is what a worker under memory pressure stops taking. */
export const SHED_PRIORITY = 3;

/** Forced collections take at most 1 / this of the process's time. */
const GC_TIME_SHARE_INVERSE = 10;

export const EXPOSE_GC_HINT = 'start Node with --expose-gc (e.g. NODE_OPTIONS=--expose-gc), as the container image does';

export interface MemoryMonitorOptions {
  log: Logger;
  intervalMs: number;
  /** Publishes `memory:gc`, `memory:pressure`, `memory:recovered` on the bus. */
  publish?: (type: string, data: Record<string, unknown>) => Promise<unknown>;
  /** Extra fields for every event, e.g. `{ process: 'worker', workerId }`. */
  identity?: Record<string, unknown>;
  /** The reading; tests inject one. Default: this process's heap and RSS. */
  read?: () => ProcessMemory;
  /** The collector; default `globalThis.gc` (present only under `--expose-gc`). `null`: none. */
  gc?: (() => void) | null;
  thresholds?: Partial<MemoryThresholds>;
  /** Monotonic milliseconds, for the GC time budget; default performance.now. Tests inject one. */
  now?: () => number;
}

export type MemoryAction = 'none' | 'gc' | 'gc-unavailable';

export interface MemoryCheck {
  /** The reading that decided the action (after a GC, when one ran). */
  memory: ProcessMemory;
  action: MemoryAction;
  isUnderPressure: boolean;
}

/**
 * Watches this process's heap every `intervalMs`. At 80 % it runs `global.gc()` when Node exposes
 * it (and warns once, with the fix, when it does not); at 90 % — measured after that GC — it
 * enters pressure, in which a worker hands back priority-3 runs (`handBack`) until the heap is under
 * 70 %. The gap between 90 and 70 keeps a worker from flapping in and out of pressure.
 */
export class MemoryMonitor {
  private readonly options: MemoryMonitorOptions;
  private readonly thresholds: MemoryThresholds;
  private readonly read: () => ProcessMemory;
  private timer: NodeJS.Timeout | undefined;
  private hasWarnedNoGc = false;
  /** No forced collection before this (performance.now() time); see check(). */
  private nextGcAt = 0;
  private underPressure = false;
  private last: ProcessMemory | undefined;
  private readonly pressureListeners = new Set<(isUnderPressure: boolean) => void>();

  constructor(options: MemoryMonitorOptions) {
    this.options = options;
    this.thresholds = { ...DEFAULT_MEMORY_THRESHOLDS, ...options.thresholds };
    this.read = options.read ?? readProcessMemory;
  }

  get isUnderPressure(): boolean {
    return this.underPressure;
  }

  /** The last reading taken (a fresh one before the first check). */
  get latest(): ProcessMemory {
    return this.last ?? this.read();
  }

  /** Calls `listener` each time pressure begins (true) or ends (false); returns its removal. */
  onPressureChange(listener: (isUnderPressure: boolean) => void): () => void {
    this.pressureListeners.add(listener);
    return () => this.pressureListeners.delete(listener);
  }

  /** Checks now and then every interval. The timer does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    void this.check().catch((err: unknown) => this.options.log.warn({ err }, 'memory check failed'));
    this.timer = setInterval(() => {
      void this.check().catch((err: unknown) => this.options.log.warn({ err }, 'memory check failed'));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One check: read, collect if high, enter or leave pressure. Publishes what it did. */
  async check(): Promise<MemoryCheck> {
    const { log } = this.options;
    let memory = this.read();
    let action: MemoryAction = 'none';
    const now = this.options.now ?? (() => performance.now());
    if (memory.heapPercent >= this.thresholds.gcPercent && now() >= this.nextGcAt) {
      const gc = this.options.gc === undefined ? (globalThis as { gc?: () => void }).gc : this.options.gc;
      if (gc) {
        const before = memory;
        const startedAt = now();
        gc();
        // A full collection of a nearly full heap takes 100+ ms on a busy machine; forced back to
        // back (short intervals, a heap held by live data) they leave the process almost no time of
        // its own, and V8 then ends it with "ineffective mark-compacts near heap limit". Spending at
        // most a tenth of the time on forced collections keeps it serving.
        const endedAt = now();
        this.nextGcAt = endedAt + GC_TIME_SHARE_INVERSE * (endedAt - startedAt);
        memory = this.read();
        action = 'gc';
        log.info({ beforePercent: before.heapPercent, afterPercent: memory.heapPercent }, `heap at ${before.heapPercent}%: ran gc, now ${memory.heapPercent}%`);
        await this.publish('memory:gc', { heapPercentBefore: before.heapPercent, heapPercent: memory.heapPercent, rssMB: memory.rssMB });
      } else {
        action = 'gc-unavailable';
        if (!this.hasWarnedNoGc) {
          this.hasWarnedNoGc = true;
          log.warn({ heapPercent: memory.heapPercent }, `heap at ${memory.heapPercent}% but global.gc is not exposed: ${EXPOSE_GC_HINT}`);
        }
      }
    }
    if (!this.underPressure && memory.heapPercent >= this.thresholds.pressurePercent) {
      this.underPressure = true;
      log.warn(
        { heapPercent: memory.heapPercent },
        `memory pressure: heap at ${memory.heapPercent}%; handing back priority-${SHED_PRIORITY} runs until under ${this.thresholds.recoverPercent}%`,
      );
      this.notify(true);
      await this.publish('memory:pressure', { heapPercent: memory.heapPercent, rssMB: memory.rssMB, shedPriority: SHED_PRIORITY });
    } else if (this.underPressure && memory.heapPercent < this.thresholds.recoverPercent) {
      this.underPressure = false;
      log.info({ heapPercent: memory.heapPercent }, `memory recovered: heap at ${memory.heapPercent}%; taking priority-${SHED_PRIORITY} runs again`);
      this.notify(false);
      await this.publish('memory:recovered', { heapPercent: memory.heapPercent, rssMB: memory.rssMB });
    }
    this.last = memory;
    return { memory, action, isUnderPressure: this.underPressure };
  }

  /**
   * For the executor's `handBack`: the reason to return a run to the queue untouched, or undefined.
   * Only priority-3 runs are handed back, and only while under pressure.
   */
  readonly handBack = (spec: Pick<AgentSpec, 'priority'>): string | undefined =>
    this.underPressure && spec.priority >= SHED_PRIORITY ? `memory pressure (heap ${this.last?.heapPercent ?? '?'}%)` : undefined;

  private notify(isUnderPressure: boolean): void {
    for (const listener of this.pressureListeners) {
      try {
        listener(isUnderPressure);
      } catch (err) {
        this.options.log.warn({ err }, 'memory pressure listener failed');
      }
    }
  }

  private async publish(type: string, data: Record<string, unknown>): Promise<void> {
    if (!this.options.publish) return;
    await this.options.publish(type, { ...this.options.identity, ...data }).catch((err: unknown) => this.options.log.debug({ err, type }, 'could not publish memory event'));
  }
}
