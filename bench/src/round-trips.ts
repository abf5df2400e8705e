import type { Redis } from 'ioredis';

/**
 * Counts Redis round trips a process makes on the given connections: a round trip starts when a
 * command is sent while none of them has a command in flight. Commands sent together (a pipeline,
 * or a script sent right before BullMQ's own command on the same connection so that both replies
 * come back together) count once. Meaningful for one run at a time (concurrency 1): with runs in
 * parallel, their round trips overlap and merge.
 */
export interface RoundTripCounter {
  readonly count: number;
  reset(): void;
}

export function countRoundTrips(connections: readonly Redis[]): RoundTripCounter {
  let inFlight = 0;
  let count = 0;
  for (const connection of connections) {
    const send = connection.sendCommand.bind(connection);
    connection.sendCommand = ((command: Parameters<Redis['sendCommand']>[0], stream?: Parameters<Redis['sendCommand']>[1]) => {
      if (inFlight === 0) count += 1;
      inFlight += 1;
      const done = () => {
        inFlight -= 1;
      };
      command.promise.then(done, done);
      return send(command, stream);
    }) as Redis['sendCommand'];
  }
  return {
    get count() {
      return count;
    },
    reset() {
      count = 0;
    },
  };
}
