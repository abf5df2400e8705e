import type { Redis } from 'ioredis';

/**
 * Batches the writes made on a connection during one turn of the event loop into one socket write.
 *
 * ioredis writes every command to the socket as it is sent: with many runs in flight, each run's
 * admission and each run's completion (and BullMQ's own command right behind it) is a syscall of
 * its own in this process and a read of its own in Redis — at high concurrency the largest part of
 * both processes' CPU per run. `holdWrites(connection)` corks the socket until the event loop's
 * next check phase (setImmediate): everything the run path sends meanwhile — the completion script
 * and BullMQ's moveToFinished behind it, the admissions of the runs whose jobs arrived in the same
 * reply — leaves in one write. The delay is the rest of the current turn, never a timer.
 */
export function createWriteBatcher(connection: Redis): () => void {
  let isHolding = false;
  const release = () => {
    isHolding = false;
    connection.stream?.uncork();
  };
  return () => {
    if (isHolding) return;
    const stream = connection.stream;
    // Not connected yet: ioredis queues the commands and writes them once connected.
    if (!stream || connection.status !== 'ready') return;
    isHolding = true;
    stream.cork();
    setImmediate(release);
  };
}
