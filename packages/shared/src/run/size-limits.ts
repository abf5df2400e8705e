/**
 * Byte caps on what agents can make us store or send: text that reaches Redis (run records, the
 * DLQ, the event history) or a pub/sub subscriber (whose client buffer Redis caps at 32 MB before
 * it drops the connection). Agents' own code decides these sizes, so none of them may be unbounded.
 *
 * Text over a cap is cut at a UTF-8 character boundary and ends with a marker saying how much was
 * cut, so a reader sees that it was truncated; structured payloads (`ctx.publish`) are refused
 * instead, since half a JSON value means nothing.
 */

/** An error message (run records, events, the DLQ's failedReason, RPC error replies, health reasons). */
export const MAX_ERROR_MESSAGE_BYTES = 4 * 1024;

/** A stack trace (the DLQ's stacktrace, log lines). */
export const MAX_STACK_BYTES = 16 * 1024;

/**
 * A `ctx.publish` payload, serialised. The event history keeps the last 1000 events, so this bounds
 * it at 64 MB; larger data belongs in a store of its own, with its key on the bus.
 */
export const MAX_PUBLISH_PAYLOAD_BYTES = 64 * 1024;

/** The largest delay Node's timers honour (2^31 − 1 ms, about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `text` if it fits in `maxBytes` (UTF-8), else its head and `… [truncated N bytes]`, the whole
 * within `maxBytes`. Never splits a character.
 */
export function truncateBytes(text: string, maxBytes: number): string {
  // Fast path: no string of this many UTF-16 units can be longer than 3 bytes per unit.
  if (text.length * 3 <= maxBytes) return text;
  const bytes = Buffer.byteLength(text);
  if (bytes <= maxBytes) return text;
  const buffer = Buffer.from(text);
  // The marker's own length depends on the count it prints; reserve room for the longest.
  const room = Math.max(0, maxBytes - Buffer.byteLength(truncationMarker(bytes)));
  let end = room;
  // Back up to the first byte of a UTF-8 sequence (continuation bytes are 10xxxxxx).
  while (end > 0 && (buffer[end]! & 0xc0) === 0x80) end--;
  return `${buffer.subarray(0, end).toString()}${truncationMarker(bytes - end)}`;
}

function truncationMarker(cutBytes: number): string {
  return `… [truncated ${cutBytes} bytes]`;
}

/**
 * The error with its message and stack capped (in place when they can be written, else on a copy
 * of the same class and name), so a run that throws a 50 MB message stores 4 KiB of it.
 */
export function capError<E extends Error>(error: E): E {
  const message = truncateBytes(error.message, MAX_ERROR_MESSAGE_BYTES);
  const stack = error.stack === undefined ? undefined : truncateBytes(error.stack, MAX_STACK_BYTES);
  if (message === error.message && stack === error.stack) return error;
  try {
    error.message = message;
    if (stack !== undefined) error.stack = stack;
    if (error.message === message) return error;
  } catch {
    // a frozen or accessor-only error: copy below
  }
  const copy = Object.assign(Object.create(Object.getPrototypeOf(error) as object) as E, error);
  Object.defineProperties(copy, {
    name: { value: error.name, writable: true, configurable: true },
    message: { value: message, writable: true, configurable: true },
    stack: { value: stack, writable: true, configurable: true },
  });
  return copy;
}
