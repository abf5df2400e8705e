import type { Writable } from 'node:stream';
import type { Cluster, Redis } from 'ioredis';
import { isClusterConnection } from './redis-connection.js';

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
 *
 * A Cluster has no socket of its own but one per node: all of its masters' are corked, since the
 * commands of the turn go to whichever serves their slot (one, while all keys share a hash tag).
 * Without this, every command on a cluster was a write of its own: 60–130 µs more worker CPU per
 * run in the bench's cluster scenario, most of it in the write syscalls.
 */
export function createWriteBatcher(connection: Redis): () => void {
  let held: Writable[] = [];
  const release = () => {
    // The sockets corked, not the current ones: a node that reconnected meanwhile has a new socket.
    for (const stream of held) stream.uncork();
    held = [];
  };
  return () => {
    if (held.length > 0) return;
    held = readySockets(connection);
    for (const stream of held) stream.cork();
    if (held.length > 0) setImmediate(release);
  };
}

/** Sockets to cork; none while not connected (ioredis queues the commands and writes them once connected). */
function readySockets(connection: Redis): Writable[] {
  const nodes = isClusterConnection(connection) ? (connection as unknown as Cluster).nodes('master') : [connection];
  return nodes.filter((node) => node.status === 'ready' && node.stream).map((node) => node.stream);
}
