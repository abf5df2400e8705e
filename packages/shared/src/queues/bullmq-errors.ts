/**
 * BullMQ reports some conditions only as an Error whose message says it (no class, no code): the
 * predicates here are the one place that knows those messages, so a BullMQ upgrade that rewords one
 * changes this file only.
 */

const WAIT_TIMED_OUT = /timed out before finishing/;
const LOST_LOCK = /^(Missing lock for job|Lock mismatch for job)/;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `job.waitUntilFinished(events, ttl)` gave up: the job had not finished within `ttl` (it may still run). */
export function isWaitTimeoutError(err: unknown): boolean {
  return WAIT_TIMED_OUT.test(messageOf(err));
}

/** A command needed the job's lock, which this worker no longer holds (it was stalled and handed on). */
export function isLostLockError(err: unknown): boolean {
  return LOST_LOCK.test(messageOf(err));
}
