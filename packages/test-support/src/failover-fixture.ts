import { afterAll } from 'vitest';
import { stopApps, type AppProcess } from './processes.js';
import { createRunLog, type RunLog } from './run-log.js';
import { findTool, isMissing } from './tools.js';

/**
 * What every failover test file sets up the same way: whether this machine has the Redis programs
 * it needs (the file's tests skip without them, counted as skipped), its run log, the processes it
 * starts, and the Redis set (Sentinel or Cluster) it starts — all stopped after the file.
 */
export interface FailoverFixture<TSet extends { stop(): Promise<void> }> {
  /** Whether a program the set needs is missing (describe.skipIf). */
  readonly missing: boolean;
  readonly runLog: RunLog;
  /** The scheduler and worker processes; stopped (SIGTERM) after the file. */
  readonly processes: AppProcess[];
  /** Hands over the set once started, so it is stopped after the file; returns it. */
  adopt(set: TSet): TSet;
}

export function useFailoverFixture<TSet extends { stop(): Promise<void> }>(name: string, { sentinel = false }: { sentinel?: boolean } = {}): FailoverFixture<TSet> {
  const needed = [
    findTool('redis-server', { install: 'apt-get install redis-server' }),
    ...(sentinel ? [findTool('redis-sentinel', { install: 'apt-get install redis-sentinel' })] : []),
    findTool('redis-cli', { install: 'apt-get install redis-tools' }),
  ];
  const runLog = createRunLog(name);
  const processes: AppProcess[] = [];
  let set: TSet | undefined;
  afterAll(async () => {
    await stopApps(processes.splice(0)).catch(() => undefined);
    await set?.stop();
    runLog.remove();
  }, 60_000);
  return {
    missing: needed.some((tool) => isMissing(tool)),
    runLog,
    processes,
    adopt: (started) => {
      set = started;
      return started;
    },
  };
}
