import type { Logger } from 'pino';
import type { AgentSpec } from '../agents/agent.js';
import { SHED_PRIORITY, type MemoryMonitor } from './memory-monitor.js';

/** The part of a BullMQ Worker that shedding steers: its intake. */
export interface Intake {
  /** BullMQ `Worker.pause(true)`: stop fetching; runs in flight go on. */
  pause(doNotWaitActive?: boolean): Promise<void>;
  resume(): void | Promise<void>;
}

export interface MemoryShedding {
  /** For the executor's `handBack`: a reason to return the run untouched, or undefined to run it. */
  handBack(spec: Pick<AgentSpec, 'priority'>): string | undefined;
  /** The worker whose intake pauses on a hand-back and resumes on recovery. */
  attach(intake: Intake): void;
  /** Whether intake is paused for memory now. */
  readonly isIntakePaused: boolean;
  /** Runs handed back since the worker started. */
  readonly handBacks: number;
  /** Stops listening to the monitor. */
  close(): void;
}

/**
 * Memory shedding without spinning. Under pressure (heap ≥ 90 %) a worker that fetches a
 * priority-3 run hands it back (`moveToWait`: no attempt spent) and pauses its own intake until the
 * monitor reports recovery (heap < 70 %). BullMQ cannot fetch by priority, so handing back while
 * still fetching would take the same run again at once, growing its `attemptsStarted` without end;
 * paused, this worker fetches nothing, and the run goes to another worker. Hand-backs are therefore
 * bounded by the runs fetched before the pause took effect — at most the worker's concurrency per
 * episode of pressure.
 *
 * The cost, stated: while paused the worker takes no priority-1/2 runs either (runs in flight
 * finish). Until its first priority-3 run arrives it keeps taking them; and if every worker is
 * under pressure, runs wait in the queue (nothing is lost) until one recovers.
 */
export function createMemoryShedding({ monitor, log }: { monitor: Pick<MemoryMonitor, 'handBack' | 'onPressureChange'>; log: Logger }): MemoryShedding {
  let intake: Intake | undefined;
  let isPaused = false;
  let handBacks = 0;
  // Resuming waits for the pause to have taken effect, or BullMQ would see nothing to resume.
  let pausing: Promise<void> = Promise.resolve();
  const resume = () => {
    if (!isPaused || !intake) return;
    isPaused = false;
    const paused = intake;
    log.info({ handBacks }, 'memory recovered: this worker takes runs again');
    void pausing.then(() => paused.resume()).catch((err: unknown) => log.warn({ err }, 'could not resume intake'));
  };
  const stopListening = monitor.onPressureChange((isUnderPressure) => {
    if (!isUnderPressure) resume();
  });
  return {
    handBack(spec) {
      const reason = monitor.handBack(spec);
      if (!reason) return undefined;
      handBacks++;
      if (!isPaused && intake) {
        isPaused = true;
        log.warn({ reason, handBacks }, `${reason}: handing priority-${SHED_PRIORITY} runs back and pausing this worker's intake until memory recovers; other workers take the queued runs`);
        pausing = intake.pause(true).catch((err: unknown) => log.warn({ err }, 'could not pause intake'));
      }
      return reason;
    },
    attach(worker) {
      intake = worker;
    },
    get isIntakePaused() {
      return isPaused;
    },
    get handBacks() {
      return handBacks;
    },
    close() {
      stopListening();
    },
  };
}
