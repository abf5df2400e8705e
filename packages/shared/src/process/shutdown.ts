import type { Worker } from 'bullmq';
import type { Logger } from 'pino';
import { listenForTermination, stopWithParent } from './termination-signals.js';

/**
 * The six steps of a graceful shutdown (docs/design.md#graceful-shutdown), in order. Every process runs all
 * six — a step with nothing registered still appears in the log, so operators always see 1..6.
 */
export const SHUTDOWN_STEPS = {
  1: 'stop intake and timers',
  2: 'wait for running agents',
  3: 'abort what still runs and return it to the queue',
  4: 'final heartbeat and state flush, worker:offline',
  5: 'close bus, RPC and HTTP',
  6: 'close Redis',
} as const;

export type ShutdownStep = keyof typeof SHUTDOWN_STEPS;

/**
 * The same six steps as a scheduler logs them: it runs no agents and has no heartbeat, so the
 * worker's names would describe work it does not do.
 */
export const SCHEDULER_SHUTDOWN_STEPS: Record<ShutdownStep, string> = {
  1: 'stop intake and timers, release the leader lease',
  2: 'wait for in-flight work',
  3: 'abort what still runs',
  4: 'final state flush',
  5: 'close bus, queues and HTTP',
  6: 'close Redis',
};

/** The most a cleanup may take while Redis is unreachable (it cannot finish its Redis work anyway). */
export const OFFLINE_CLEANUP_TIMEOUT_MS = 1000;

/**
 * The abort reason given to runs still active when the grace period ends. The executor recognises
 * it and hands the run back to the queue (`moveToWait`) instead of recording a failure, so no
 * attempt is spent.
 */
export const SHUTDOWN_ABORT_REASON = 'werkpilot: process shutting down; run returned to the queue';

/** Whether a run's abort reason is the shutdown's (step 3), not a timeout or a cancellation. */
export function isShutdownAbort(reason: unknown): boolean {
  return reason === SHUTDOWN_ABORT_REASON;
}

export interface ShutdownContext {
  /** The signal (or other reason) that started the shutdown. */
  reason: string;
  graceMs: number;
  /** Aborts when the grace period ends (step 2 cleanups may listen to it). */
  graceOver: AbortSignal;
}

export type Cleanup = (ctx: ShutdownContext) => unknown;

export interface GracefulShutdownOptions {
  log: Logger;
  /** How long step 2 waits for running agents (`SHUTDOWN_GRACE_MS`). */
  graceMs: number;
  /**
   * Publishes `shutdown:step` on the bus. Steps 1–5 publish when done; step 6 publishes as it
   * starts, since the bus needs the Redis connection that step closes.
   */
  publish?: (type: string, data: Record<string, unknown>) => Promise<unknown>;
  /** Extra fields for every `shutdown:step` event, e.g. `{ process: 'worker', workerId }`. */
  identity?: Record<string, unknown>;
  /**
   * Longest any one cleanup outside step 2 may take before the shutdown moves on (a Redis that is
   * down must not keep a process alive). Default 5000.
   */
  cleanupTimeoutMs?: number;
  /**
   * Whether Redis answers right now. While it does not, cleanups outside step 2 get at most
   * `OFFLINE_CLEANUP_TIMEOUT_MS` and no `shutdown:step` is published, so a process told to stop
   * during an outage exits within seconds instead of waiting for Redis.
   */
  isRedisUp?: () => boolean;
  exit?: (code: number) => void;
  clock?: () => number;
  /** What each step is called in the log and on the bus; default `SHUTDOWN_STEPS` (a worker's). */
  stepNames?: Record<ShutdownStep, string>;
}

interface Registered {
  name: string;
  cleanup: Cleanup;
}

/**
 * Graceful shutdown in six logged steps. Parts register their cleanup with the step it belongs to
 * as they acquire a resource; within a step, cleanups run in reverse order of registration (the
 * last acquired is released first). Step 2 runs its cleanups together, bounded by the grace
 * period; every other cleanup is bounded by `cleanupTimeoutMs`, and a failing one is logged and
 * skipped — the shutdown always reaches step 6 and exits 0 (1 when a crash started it, see
 * process-faults.ts).
 *
 * A second SIGTERM/SIGINT during the shutdown exits at once (code 1), with a line saying so.
 */
export class GracefulShutdown {
  private readonly options: GracefulShutdownOptions;
  private readonly clock: () => number;
  private readonly steps = new Map<ShutdownStep, Registered[]>();
  private running: Promise<void> | undefined;
  private listening: (() => void) | undefined;
  private exitCode = 0;

  constructor(options: GracefulShutdownOptions) {
    this.options = options;
    this.clock = options.clock ?? Date.now;
  }

  get isShuttingDown(): boolean {
    return this.running !== undefined;
  }

  /**
   * Registers a cleanup for `step`. Returns a function that unregisters it (for a resource
   * released early). Registering after the shutdown started is ignored for steps already run.
   */
  register(step: ShutdownStep, name: string, cleanup: Cleanup): () => void {
    const entry: Registered = { name, cleanup };
    const list = this.steps.get(step) ?? [];
    list.push(entry);
    this.steps.set(step, list);
    return () => {
      const current = this.steps.get(step);
      if (current)
        this.steps.set(
          step,
          current.filter((e) => e !== entry),
        );
    };
  }

  /**
   * Starts the shutdown on SIGTERM and SIGINT (a relayed copy of the same signal counts once, see
   * `listenForTermination`), or when the supervising parent process goes away; a second signal
   * exits at once.
   */
  listen(signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): void {
    const stopSignals = listenForTermination({
      signals,
      onFirst: (signal) => void this.run(signal),
      onRepeat: (signal) => {
        this.options.log.warn({ signal }, `second ${signal} during shutdown: exiting now without finishing the remaining steps`);
        this.exit(1);
      },
    });
    const stopWatchingParent = stopWithParent(() => void this.run('parent process exited'));
    this.listening = () => {
      stopSignals();
      stopWatchingParent();
    };
  }

  /**
   * Runs the six steps once (later calls return the same promise), then exits 0 — or with
   * `exitCode` when a call asked for one (the highest asked wins, even after the steps started).
   * `graceMs` shortens step 2 when given to the call that starts the shutdown.
   */
  run(reason: string, { exitCode = 0, graceMs }: { exitCode?: number; graceMs?: number } = {}): Promise<void> {
    this.exitCode = Math.max(this.exitCode, exitCode);
    this.running ??= this.runSteps(reason, graceMs ?? this.options.graceMs);
    return this.running;
  }

  private async runSteps(reason: string, graceMs: number): Promise<void> {
    const { log } = this.options;
    const startedAt = this.clock();
    const grace = new AbortController();
    const ctx: ShutdownContext = { reason, graceMs, graceOver: grace.signal };
    log.info({ reason, graceMs }, `shutting down on ${reason} (grace ${graceMs} ms)`);

    for (const step of [1, 2, 3, 4, 5, 6] as ShutdownStep[]) {
      const name = (this.options.stepNames ?? SHUTDOWN_STEPS)[step];
      const stepStart = this.clock();
      if (step === 6) await this.publishStep({ step, name, phase: 'starting' });
      const extra = step === 2 ? await this.runGraceStep(ctx, grace) : await this.runInReverse(step, ctx);
      const durationMs = this.clock() - stepStart;
      log.info({ step, of: 6, name, durationMs, ...extra }, `shutdown step ${step}/6: ${name} (${durationMs} ms)`);
      if (step < 6) await this.publishStep({ step, name, durationMs, ...extra });
    }
    this.listening?.();
    const totalMs = this.clock() - startedAt;
    const code = this.exitCode;
    log.info({ totalMs, exitCode: code }, `shutdown complete in ${totalMs} ms; exiting ${code}`);
    await this.flushLog();
    this.exit(code);
  }

  /** Step 2: all its cleanups at once, until they finish or the grace period ends. */
  private async runGraceStep(ctx: ShutdownContext, grace: AbortController): Promise<Record<string, unknown>> {
    const entries = this.steps.get(2) ?? [];
    if (entries.length === 0) return {};
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace over'>((resolve) => {
      timer = setTimeout(() => {
        grace.abort();
        resolve('grace over');
      }, ctx.graceMs);
    });
    const all = Promise.all(entries.map((e) => this.attempt(e, ctx)));
    const outcome = await Promise.race([all.then(() => 'drained' as const), graceOver]);
    clearTimeout(timer);
    return { graceExceeded: outcome === 'grace over' };
  }

  private async runInReverse(step: ShutdownStep, ctx: ShutdownContext): Promise<Record<string, unknown>> {
    const entries = [...(this.steps.get(step) ?? [])].reverse();
    for (const entry of entries) await this.withTimeout(entry, ctx);
    return {};
  }

  private async withTimeout(entry: Registered, ctx: ShutdownContext): Promise<void> {
    const limit = Math.min(this.options.cleanupTimeoutMs ?? 5000, this.isRedisUp() ? Infinity : OFFLINE_CLEANUP_TIMEOUT_MS);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), limit);
    });
    const outcome = await Promise.race([this.attempt(entry, ctx), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') this.options.log.warn({ cleanup: entry.name, limitMs: limit }, `shutdown: ${entry.name} did not finish within ${limit} ms; moving on`);
  }

  private async attempt(entry: Registered, ctx: ShutdownContext): Promise<'done'> {
    try {
      await entry.cleanup(ctx);
    } catch (err) {
      this.options.log.warn({ cleanup: entry.name, err }, `shutdown: ${entry.name} failed; moving on`);
    }
    return 'done';
  }

  private isRedisUp(): boolean {
    return this.options.isRedisUp?.() ?? true;
  }

  private async publishStep(data: Record<string, unknown>): Promise<void> {
    if (!this.options.publish || !this.isRedisUp()) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.options.publish('shutdown:step', { ...this.options.identity, ...data }).catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, 1000)))]);
    clearTimeout(timer);
  }

  /**
   * Waits for the logger's pending writes: on a pipe pino writes asynchronously, and exiting with a
   * write in flight can reorder or drop the last lines (the step log included).
   */
  private async flushLog(): Promise<void> {
    const log = this.options.log as Logger & { flush?: (cb?: (err?: Error) => void) => void };
    if (typeof log.flush !== 'function') return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        try {
          log.flush!(() => resolve());
        } catch {
          resolve();
        }
      }),
      new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
    ]);
    clearTimeout(timer);
  }

  private exit(code: number): void {
    (this.options.exit ?? ((c: number) => process.exit(c)))(code);
  }
}

/**
 * Registers a BullMQ worker's part of the shutdown: step 1 stops it taking jobs (`close()` stops
 * fetching at once and resolves when the active jobs are done and its connections closed), step 2
 * waits for that, and step 3 aborts what still runs with `SHUTDOWN_ABORT_REASON` — the processor
 * hands those runs back to the queue without spending an attempt — and waits for the close.
 *
 * While Redis is down, `close()` cannot finish (it closes connections politely), so steps 2 and 3
 * wait only until `activeJobs` is empty: an idle worker stops at once during an outage.
 */
export function registerWorkerDrain(
  shutdown: GracefulShutdown,
  worker: Worker,
  { name, activeJobs, isRedisUp }: { name: string; activeJobs: ReadonlySet<string>; isRedisUp: () => boolean },
): void {
  let closing: Promise<void> = Promise.resolve();
  const closedOrIdleOffline = async () => {
    let isClosed = false;
    void closing.finally(() => (isClosed = true));
    while (!isClosed && (isRedisUp() || activeJobs.size > 0)) await new Promise((resolve) => setTimeout(resolve, 25));
  };
  shutdown.register(1, `${name}: stop taking jobs`, () => {
    closing = worker.close();
    closing.catch(() => undefined);
  });
  shutdown.register(2, `${name}: wait for active jobs`, closedOrIdleOffline);
  shutdown.register(3, `${name}: abort active jobs`, async () => {
    worker.cancelAllJobs(SHUTDOWN_ABORT_REASON);
    await closedOrIdleOffline();
  });
}
