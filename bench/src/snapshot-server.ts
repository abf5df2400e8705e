/**
 * The scheduler's HTTP side in a process of its own, for the registry-scale scenario: the app and
 * snapshot service wired as `apps/scheduler` wires them (bench/src/scheduler-http.ts), over a fleet
 * of `size` agents, without the leader's duties (reconcile, boot, health rounds), which would run
 * thousands of boot checks and cron ticks while the snapshot is measured. Its own process, so the
 * event-loop delay it reports is the scheduler's alone, not the benchmark client's.
 *
 * argv[2]: JSON { url, prefix, size, agentHistograms, maxAgeMs }. Talks over the IPC channel:
 * sends { type: 'listening', port }; answers 'loop' with { p99Ms, maxMs, cpuMs, rssMB } (event-loop
 * delay and CPU time since the last 'reset-loop', and its RSS), does 'invalidate' (the next request waits for a fresh build) and 'close'.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { buildRegistry } from '@werkpilot/shared';
import { fleetDefinitions } from './agent-fleet.js';
import { openOrchestratorQueues } from './orchestrator.js';
import { schedulerHttpApp } from './scheduler-http.js';

interface ServerOptions {
  url: string;
  prefix: string;
  size: number;
  agentHistograms: boolean;
  maxAgeMs: number;
}

export type SnapshotServerRequest = 'reset-loop' | 'loop' | 'invalidate' | 'close';
export interface SnapshotServerReply {
  type: 'listening' | 'reset-loop' | 'loop' | 'invalidate';
  port?: number;
  p99Ms?: number;
  maxMs?: number;
  /** CPU time this process used since the last 'reset-loop' (user + system). */
  cpuMs?: number;
  rssMB?: number;
}

const options = JSON.parse(process.argv[2]!) as ServerOptions;
const registry = buildRegistry(fleetDefinitions(options.size).map((definition, i) => ({ definition, source: `agent-${i}.mjs` })));
const { queues, keys, redis, close } = openOrchestratorQueues(options.url, options.prefix);
const { app, snapshots, close: closeApp } = schedulerHttpApp({ redis, keys, queues, registry, agentHistograms: options.agentHistograms, maxAgeMs: options.maxAgeMs });
const loop = monitorEventLoopDelay({ resolution: 1 });
loop.enable();
let cpuAtReset = process.cpuUsage();
const reply = (message: SnapshotServerReply) => process.send!(message);
const server = app.listen(0, '127.0.0.1', () => reply({ type: 'listening', port: (server.address() as AddressInfo).port }));

process.on('message', (type: SnapshotServerRequest) => {
  if (type === 'reset-loop') {
    loop.reset();
    cpuAtReset = process.cpuUsage();
    reply({ type });
  } else if (type === 'loop') {
    const cpu = process.cpuUsage(cpuAtReset);
    reply({ type, p99Ms: loop.percentile(99) / 1e6, maxMs: loop.max / 1e6, cpuMs: (cpu.user + cpu.system) / 1000, rssMB: process.memoryUsage.rss() / (1024 * 1024) });
  } else if (type === 'invalidate') {
    snapshots.invalidate();
    reply({ type });
  } else if (type === 'close') {
    server.close();
    server.closeAllConnections();
    void closeApp()
      .then(close)
      .finally(() => process.exit(0));
  }
});
