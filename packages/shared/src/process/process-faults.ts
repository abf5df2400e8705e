/**
 * What a process does when code it runs misbehaves outside any `await`: the process-level policy
 * for unhandled promise rejections and uncaught exceptions. Agents' code is the usual source (a
 * `Promise.reject(...)` nobody awaits, a throw inside a timer callback), and Node's defaults — exit
 * at once — would stall every other run in flight on the worker.
 *
 * - An **unhandled rejection** is logged (with the agent and run it happened in), reported to
 *   `onUnhandledRejection` (the worker counts it and publishes `agent:unhandled-rejection`) and
 *   otherwise ignored: the rejected promise has no one waiting for it, so no state depends on it.
 * - An **uncaught exception** leaves the process in a state nobody knows, so it stops: the run it
 *   happened in (if one) is failed with the exception as its error (an attempt spent, so a run that
 *   crashes every time ends in the DLQ instead of crash-looping the fleet), then the graceful
 *   shutdown runs with a short grace (`CRASH_GRACE_MS`), returns what still runs to the queue
 *   without spending an attempt, and exits 1 for the supervisor to restart it.
 *
 * Attribution uses one AsyncLocalStorage: the executor runs every agent callback inside
 * `runInScope`, and Node runs both handlers in the async context in which the promise was
 * rejected or the callback threw.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from 'pino';
import type { GracefulShutdown } from './shutdown.js';
import { MAX_ERROR_MESSAGE_BYTES, MAX_STACK_BYTES, truncateBytes } from '../run/size-limits.js';

/** Which agent code a callback belongs to. */
export interface RunScope {
  agent: string;
  /** The run (job id), or the request id of an `onRequest`. */
  runId?: string;
  attempt?: number;
  /** What the agent was doing: its `run`, an `onRequest` answer or a `healthCheck`. */
  activity: 'run' | 'request' | 'health-check';
}

/**
 * Process-wide by nature, like the `process.on` handlers that read it: one store, so every scope
 * entered anywhere in the process is visible to the handlers.
 */
const scopes = new AsyncLocalStorage<RunScope>();

/** Calls `fn` inside `scope`: faults in anything it starts are attributed to that agent and run. */
export function runInScope<T>(scope: RunScope, fn: () => T): T {
  return scopes.run(scope, fn);
}

/** The scope of the code running now, if it is an agent's. */
export function currentScope(): RunScope | undefined {
  return scopes.getStore();
}

/** How long in-flight runs may finish after an uncaught exception (at most `SHUTDOWN_GRACE_MS`). */
export const CRASH_GRACE_MS = 5000;

/** A fault as the policy reports it: the error (capped) and the agent code it came from. */
export interface ProcessFault {
  kind: 'unhandled-rejection' | 'uncaught-exception';
  name: string;
  message: string;
  stack?: string;
  scope?: RunScope;
}

export interface ProcessFaultPolicyOptions {
  log: Logger;
  /** Run on an uncaught exception, with `{ exitCode: 1, graceMs: crashGraceMs }`. */
  shutdown: Pick<GracefulShutdown, 'run'>;
  /** Step 2's grace on a crash. Default `CRASH_GRACE_MS`. */
  crashGraceMs?: number;
  /** Each unhandled rejection, after it is logged (count it, publish it). Must not throw. */
  onUnhandledRejection?: (fault: ProcessFault) => void;
  /** An uncaught exception, before the shutdown starts (fail the run it came from). Must not throw. */
  onUncaughtException?: (fault: ProcessFault) => void;
  /**
   * The process is killed this long after a crash's shutdown began, whatever the shutdown still
   * waits for: a process in an unknown state must not linger. Default crash grace + 20 s.
   */
  hardExitAfterMs?: number;
  exit?: (code: number) => void;
}

/**
 * Installs the policy on `process`; returns a function that removes it. One per process: the role
 * modules (worker, scheduler) install it right after their graceful shutdown exists.
 */
export function installProcessFaultPolicy(options: ProcessFaultPolicyOptions): () => void {
  const { log } = options;
  const crashGraceMs = options.crashGraceMs ?? CRASH_GRACE_MS;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let hasCrashed = false;

  const onRejection = (reason: unknown) => {
    const fault = describeFault('unhandled-rejection', reason, currentScope());
    log.error(
      { ...scopeFields(fault.scope), err: { name: fault.name, message: fault.message, stack: fault.stack } },
      `unhandled promise rejection${where(fault.scope)}: ${fault.message} (a promise rejected with no one awaiting it; this process keeps running)`,
    );
    safely(log, () => options.onUnhandledRejection?.(fault));
  };

  const onException = (error: unknown) => {
    const fault = describeFault('uncaught-exception', error, currentScope());
    if (hasCrashed) {
      log.error(
        { ...scopeFields(fault.scope), err: { name: fault.name, message: fault.message } },
        `another uncaught exception during the crash shutdown${where(fault.scope)}: ${fault.message}`,
      );
      return;
    }
    hasCrashed = true;
    log.fatal(
      { ...scopeFields(fault.scope), err: { name: fault.name, message: fault.message, stack: fault.stack }, crashGraceMs },
      `uncaught exception${where(fault.scope)}: ${fault.message}; the process state is unknown: shutting down (grace ${crashGraceMs} ms) and exiting 1`,
    );
    safely(log, () => options.onUncaughtException?.(fault));
    setTimeout(
      () => {
        log.fatal('the crash shutdown did not finish in time; exiting 1 now');
        exit(1);
      },
      options.hardExitAfterMs ?? crashGraceMs + 20_000,
    ).unref();
    void options.shutdown.run('uncaught exception', { exitCode: 1, graceMs: crashGraceMs });
  };

  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}

function describeFault(kind: ProcessFault['kind'], value: unknown, scope: RunScope | undefined): ProcessFault {
  const error = value instanceof Error ? value : undefined;
  const message = error ? error.message : typeof value === 'string' ? value : `a non-error value: ${safeJson(value)}`;
  return {
    kind,
    name: error?.name ?? typeof value,
    message: truncateBytes(message, MAX_ERROR_MESSAGE_BYTES),
    ...(error?.stack ? { stack: truncateBytes(error.stack, MAX_STACK_BYTES) } : {}),
    ...(scope ? { scope } : {}),
  };
}

function scopeFields(scope: RunScope | undefined): Record<string, unknown> {
  if (!scope) return {};
  return { agent: scope.agent, activity: scope.activity, ...(scope.runId ? { runId: scope.runId } : {}), ...(scope.attempt ? { attempt: scope.attempt } : {}) };
}

function where(scope: RunScope | undefined): string {
  if (!scope) return ' outside any agent';
  const activity = scope.activity === 'run' ? `run ${scope.runId ?? '?'}` : scope.activity === 'request' ? `onRequest ${scope.runId ?? ''}`.trim() : 'healthCheck';
  return ` in agent ${scope.agent} (${activity})`;
}

function safeJson(value: unknown): string {
  try {
    return truncateBytes(JSON.stringify(value) ?? String(value), MAX_ERROR_MESSAGE_BYTES);
  } catch {
    return String(value);
  }
}

function safely(log: Logger, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    log.warn({ err }, 'the fault policy could not report a fault');
  }
}

/** The bus event of an unhandled rejection. */
export const UNHANDLED_REJECTION_EVENT = 'agent:unhandled-rejection';

export interface FaultReporterOptions {
  publish: (type: string, data: Record<string, unknown>, agent?: string) => Promise<unknown>;
  /** Whether Redis answers now; while it does not, events are dropped (the log and counter keep them). */
  isRedisUp: () => boolean;
  /** Added to every event, e.g. `{ workerId }`. */
  identity?: Record<string, unknown>;
  log: Logger;
  /** Events published per second at most; the rest are counted into the next one. Default 10. */
  maxPerSecond?: number;
  clock?: () => number;
}

/**
 * Publishes `agent:unhandled-rejection` for each fault — at most `maxPerSecond`, so an agent that
 * leaves rejections in a loop cannot flood the bus (each event says how many were left out before it).
 */
export function createFaultReporter(options: FaultReporterOptions): (fault: ProcessFault) => void {
  const maxPerSecond = options.maxPerSecond ?? 10;
  const clock = options.clock ?? Date.now;
  let windowStart = 0;
  let inWindow = 0;
  let leftOut = 0;
  return (fault) => {
    const now = clock();
    if (now - windowStart >= 1000) {
      windowStart = now;
      inWindow = 0;
    }
    if (inWindow >= maxPerSecond || !options.isRedisUp()) {
      leftOut++;
      return;
    }
    inWindow++;
    const data = {
      ...options.identity,
      ...(fault.scope?.runId ? { runId: fault.scope.runId } : {}),
      ...(fault.scope?.attempt ? { attempt: fault.scope.attempt } : {}),
      ...(fault.scope ? { activity: fault.scope.activity } : {}),
      error: fault.message,
      errorName: fault.name,
      ...(leftOut > 0 ? { leftOutBefore: leftOut } : {}),
    };
    leftOut = 0;
    options.publish(UNHANDLED_REJECTION_EVENT, data, fault.scope?.agent).catch((err: unknown) => options.log.debug({ err }, 'could not publish an unhandled rejection'));
  };
}
