import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { startTracing, type Tracing } from '@werkpilot/shared';
import type { Measurement } from '../measurement.js';
import { silentLogger } from '../orchestrator.js';
import { median } from '../samples.js';
import type { Scenario } from '../scenario.js';
import { drain, type Drained } from './throughput.js';

/**
 * A local OTLP/HTTP receiver in a process of its own (so its work is not counted as the worker's):
 * accepts `POST /v1/traces`, answers success, and counts requests and bytes (`GET /stats`).
 */
const RECEIVER_SOURCE = `
const http = require('node:http');
let requests = 0, bytes = 0;
const server = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => (n += c.length));
  req.on('end', () => {
    if (req.method === 'GET') return res.end(JSON.stringify({ requests, bytes }));
    requests += 1; bytes += n;
    res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
  });
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
`;

async function startReceiver(): Promise<{ url: string; stats(): Promise<{ requests: number; bytes: number }>; close(): Promise<void> }> {
  const child: ChildProcess = spawn(process.execPath, ['-e', RECEIVER_SOURCE], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  const url = `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
  return {
    url,
    stats: async () => (await (await fetch(`${url}/stats`)).json()) as { requests: number; bytes: number },
    close: async () => {
      child.kill();
      await once(child, 'exit');
    },
  };
}

type Mode = 'raw' | 'off' | 'on';

/**
 * What tracing costs the run path: one worker at concurrency 50 draining no-op runs, with tracing
 * off (the path every worker without OTEL_EXPORTER_OTLP_ENDPOINT runs: the same code as before
 * tracing existed, give or take one branch) and on (the SDK registered, BullMQ's telemetry and our
 * spans, exported as OTLP/HTTP protobuf to a receiver process, batched as the SDK does by default),
 * beside raw BullMQ. Median of the rounds, rotating which goes first.
 */
export const tracingOverhead: Scenario = {
  name: 'tracing',
  title: 'the worker path at c50 with tracing off and on (OTLP/HTTP to a local receiver process) vs raw BullMQ: runs/s and worker CPU per run',
  async run({ quick, redis, progress }) {
    const rounds = quick ? 1 : 3;
    const count = quick ? 1000 : 10000;
    const receiver = await startReceiver();
    let tracing: Tracing | undefined;
    try {
      tracing = await startTracing({
        settings: { endpoint: `${receiver.url}/v1/traces`, protocol: 'http/protobuf' },
        defaultServiceName: 'werkpilot-bench',
        log: silentLogger('tracing'),
      });
      const on = tracing;
      const drainAs = (mode: Mode, n: number) => (mode === 'raw' ? drain(redis, 'raw', 50, n) : drain(redis, 'ours', 50, n, mode === 'on' ? { tracing: on } : {}));
      // Warm every path up (JIT, connections, Lua script cache, the exporter) before anything is timed.
      for (const mode of ['raw', 'off', 'on'] as const) await drainAs(mode, quick ? 200 : 1000);

      const runs: Record<Mode, Drained[]> = { raw: [], off: [], on: [] };
      const exported = { requests: 0, bytes: 0 };
      for (let round = 0; round < rounds; round++) {
        const order: Mode[] = (['raw', 'off', 'on'] as const).map((_, i, all) => all[(i + round) % all.length]!);
        for (const mode of order) {
          progress(`tracing: ${count} runs at concurrency 50, tracing ${mode === 'raw' ? 'n/a (raw BullMQ)' : mode} (round ${round + 1}/${rounds})`);
          const before = mode === 'on' ? await receiver.stats() : undefined;
          runs[mode].push(await drainAs(mode, count));
          if (before) {
            // Spans still batched are exported now, so their bytes count for these runs.
            await on.flush();
            const after = await receiver.stats();
            exported.requests += after.requests - before.requests;
            exported.bytes += after.bytes - before.bytes;
          }
        }
      }
      const med = (mode: Mode, field: Exclude<keyof Drained, 'redisCpuMicrosByServer'>) => median(runs[mode].map((d) => d[field]));
      const detail = { runs: count, rounds, exportRequests: exported.requests, exportedBytesPerRun: Math.round(exported.bytes / (count * rounds)) };
      return [
        { metric: 'runs/s at c50, tracing off', value: med('off', 'runsPerSecond'), baseline: med('raw', 'runsPerSecond'), unit: 'runs/s' },
        { metric: 'runs/s at c50, tracing on', value: med('on', 'runsPerSecond'), baseline: med('raw', 'runsPerSecond'), unit: 'runs/s', detail },
        { metric: 'runs/s at c50, tracing on vs off', value: med('on', 'runsPerSecond'), baseline: med('off', 'runsPerSecond'), unit: 'runs/s' },
        { metric: 'worker CPU per run at c50, tracing off', value: med('off', 'nodeCpuMicros'), baseline: med('raw', 'nodeCpuMicros'), unit: 'µs' },
        { metric: 'worker CPU per run at c50, tracing on', value: med('on', 'nodeCpuMicros'), baseline: med('raw', 'nodeCpuMicros'), unit: 'µs', detail },
        { metric: 'worker CPU per run at c50, tracing on vs off', value: med('on', 'nodeCpuMicros'), baseline: med('off', 'nodeCpuMicros'), unit: 'µs' },
      ] satisfies Measurement[];
    } finally {
      await tracing?.shutdown();
      await receiver.close();
    }
  },
};
