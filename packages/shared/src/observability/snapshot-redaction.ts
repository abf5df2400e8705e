import type { DeadLetterEntry } from '../queues/dlq.js';
import type { WorkerInfo } from '../process/heartbeat.js';

/**
 * What an anonymous client of the open `/metrics` JSON may see when dashboard credentials are
 * configured: every figure, and of each dead-lettered run its id, agent, times, attempts and the
 * first line of its error (truncated) — but no run input (`data`), no stack trace and nothing that
 * names a host or process (worker and replica ids, hosts, pids). With credentials, or with none
 * configured (then the whole API is open anyway), the snapshot is complete.
 */

/** Longest error text an anonymous client gets (the first line, cut here with an ellipsis). */
export const ANONYMOUS_ERROR_LENGTH = 200;

/** A dead-lettered run as an anonymous client sees it. */
export type AnonymousDeadLetterEntry = Pick<DeadLetterEntry, 'id' | 'agent' | 'error' | 'attemptsMade' | 'queuedAt' | 'startedAt' | 'failedAt'>;

/** A live worker as an anonymous client sees it: its figures, not its identity. */
export type AnonymousWorkerInfo = Omit<WorkerInfo, 'id' | 'host' | 'pid'>;

export function truncateError(message: string): string {
  const firstLine = message.split('\n', 1)[0]!;
  if (firstLine.length > ANONYMOUS_ERROR_LENGTH) return `${firstLine.slice(0, ANONYMOUS_ERROR_LENGTH)}…`;
  return firstLine === message ? message : `${firstLine}…`;
}

export function anonymousDeadLetterEntry(entry: DeadLetterEntry): AnonymousDeadLetterEntry {
  return {
    id: entry.id,
    agent: entry.agent,
    error: truncateError(entry.error),
    attemptsMade: entry.attemptsMade,
    queuedAt: entry.queuedAt,
    startedAt: entry.startedAt,
    failedAt: entry.failedAt,
  };
}

export function anonymousWorker(worker: WorkerInfo): AnonymousWorkerInfo {
  const { id: _id, host: _host, pid: _pid, ...figures } = worker;
  return figures;
}
