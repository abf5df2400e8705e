import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EventBus, createKeys, freePort } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import type { Measurement } from '../measurement.js';
import { silentLogger } from '../orchestrator.js';
import { sleep, summarise, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const PAYLOAD_BYTES = 1024;

/**
 * Live event streams under a flood: a real scheduler process with `clients` streams open that never
 * read (a hung browser, a stalled link) while `events` bus events of 1 KiB flow, i.e. 5 MB per
 * client at full size, more than the loopback socket buffers take. Measured: the scheduler's RSS
 * growth (peak over the flood, against its RSS before the streams opened) and `/healthz` latency
 * during the flood, beside `/healthz` on the same scheduler idle (the baseline).
 */
export const sseFlood: Scenario = {
  name: 'sse-flood',
  title: 'scheduler RSS and /healthz latency with 100 SSE clients that never read while 5000 events of 1 KiB flow',
  async run({ quick, redis, progress }) {
    const clients = quick ? 20 : 100;
    // 5 MB per stream in both modes: fewer would fit in the socket buffers and test nothing.
    const events = 5000;
    const prefix = redis.prefix('sse');
    const scheduler = await startScheduler(redis, prefix);
    const sockets: Socket[] = [];
    try {
      progress(`sse-flood: idle /healthz`);
      const idle = await probeHealthz(scheduler.url, { count: quick ? 100 : 300 });
      const rssBefore = readRssMB(scheduler.pid);

      progress(`sse-flood: ${clients} streams that never read, ${events} events`);
      for (let i = 0; i < clients; i++) sockets.push(await openStalledStream(scheduler.url));
      let peak = readRssMB(scheduler.pid);
      const cpuBefore = readCpuMs(scheduler.pid);
      const sampler = setInterval(() => (peak = Math.max(peak, readRssMB(scheduler.pid))), 25);
      let flooded = false;
      const during = probeHealthz(scheduler.url, { until: () => flooded });
      const bus = new EventBus({ redis: redis.client(), keys: createKeys(prefix), log: silentLogger('bench') });
      const payload = 'x'.repeat(PAYLOAD_BYTES);
      const publisher = redis.client();
      const started = performance.now();
      for (let i = 0; i < events; i += 100) {
        const pipeline = publisher.pipeline();
        for (let j = i; j < Math.min(events, i + 100); j++) bus.addTo(pipeline, bus.event('bench:flood', { n: j, payload }));
        await pipeline.exec();
      }
      await within(
        (async () => {
          while (scheduler.droppedStreams() < clients) await sleep(20);
        })(),
        30_000,
        `the scheduler to drop the ${clients} streams that fell behind (dropped ${scheduler.droppedStreams()})`,
      );
      const floodMs = performance.now() - started;
      // A little past the drops, for what the flood left behind to show.
      await sleep(500);
      flooded = true;
      const busy = await during;
      clearInterval(sampler);
      peak = Math.max(peak, readRssMB(scheduler.pid));
      const cpuMs = readCpuMs(scheduler.pid) - cpuBefore;
      await bus.close();

      const detail = {
        clients,
        events,
        payloadBytes: PAYLOAD_BYTES,
        floodMs: Math.round(floodMs),
        schedulerCpuMs: Math.round(cpuMs),
        droppedStreams: scheduler.droppedStreams(),
        rssBeforeMB: round(rssBefore),
        rssPeakMB: round(peak),
      };
      return [
        {
          metric: `scheduler RSS growth, ${clients} clients that never read, ${events} events of 1 KiB`,
          value: peak - rssBefore,
          baseline: null,
          unit: 'MB',
          target: { on: 'value', max: 50 },
          detail,
        },
        {
          metric: `/healthz p99 during that flood (baseline: idle)`,
          value: busy.p99,
          baseline: idle.p99,
          unit: 'ms',
          target: { on: 'value', max: 50 },
          detail: { ...detail, p50: round(busy.p50), probes: busy.count, idleP50: round(idle.p50), idleProbes: idle.count },
        },
      ] satisfies Measurement[];
    } finally {
      for (const socket of sockets) socket.destroy();
      await scheduler.stop();
    }
  },
};

interface SchedulerProcess {
  url: string;
  pid: number;
  droppedStreams(): number;
  stop(): Promise<void>;
}

async function startScheduler(redis: BenchRedis, prefix: string): Promise<SchedulerProcess> {
  const port = await freePort();
  // The production binary (plain node on apps/cli/dist; `pnpm bench` builds it first).
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'apps/cli/bin/werkpilot.js'), 'scheduler'], {
    cwd: REPO_ROOT,
    env: { ...process.env, REDIS_URL: redis.url, WERKPILOT_PREFIX: prefix, PORT: String(port), LOG_LEVEL: 'warn', SSE_MAX_CLIENTS: '100' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };
  try {
    await within(
      (async () => {
        for (;;) {
          if (child.exitCode !== null) throw new Error(`the scheduler exited with ${child.exitCode}: ${output.slice(-500)}`);
          if (
            await fetch(`${url}/readyz`).then(
              (r) => r.ok,
              () => false,
            )
          )
            return;
          await sleep(100);
        }
      })(),
      90_000,
      'the scheduler to be ready',
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, pid: child.pid!, droppedStreams: () => (output.match(/dropped a live event stream/g) ?? []).length, stop };
}

/**
 * `/healthz` round trips one after another, 10 ms apart: `count` of them, or until `until()` says
 * stop. They run in a child process of their own, so what they measure is the scheduler's answer
 * time, not this process's own event loop (which publishes the flood and holds the streams).
 */
async function probeHealthz(url: string, { count = 1_000_000, until = () => false }: { count?: number; until?: () => boolean }): Promise<{ p50: number; p99: number; count: number }> {
  const script = `
    const samples = [];
    let stopping = false;
    process.stdin.on('data', () => { stopping = true; });
    (async () => {
      while (samples.length < ${count} && !stopping) {
        const started = performance.now();
        const res = await fetch(${JSON.stringify(`${url}/healthz`)});
        await res.arrayBuffer();
        if (!res.ok) { console.error('/healthz answered ' + res.status); process.exit(1); }
        samples.push(performance.now() - started);
        await new Promise((r) => setTimeout(r, 10));
      }
      process.stdout.write(JSON.stringify(samples));
      process.exit(0);
    })();
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // The prober may finish its samples and exit between two ticks: a write then meets a closed pipe.
  child.stdin!.on('error', () => {});
  const stopper = setInterval(() => {
    if (until() && child.exitCode === null) child.stdin!.write('stop\n');
  }, 20);
  const code = await exited;
  clearInterval(stopper);
  if (code !== 0) throw new Error(`the /healthz prober failed: ${stderr.slice(-300)}`);
  return summarise(JSON.parse(stdout) as number[]);
}

/** A stream that reads until the server's `: connected`, then never again. */
async function openStalledStream(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  socket.on('error', () => {});
  socket.write(`GET /api/events HTTP/1.1\r\nhost: ${hostname}:${port}\r\naccept: text/event-stream\r\n\r\n`);
  let received = '';
  await within(
    new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer) => {
        received += chunk.toString('latin1');
        if (!received.includes(': connected')) return;
        socket.off('data', onData);
        socket.pause();
        if (received.startsWith('HTTP/1.1 200')) resolve();
        else reject(new Error(`GET /api/events answered ${received.split('\r\n')[0]}`));
      };
      socket.on('data', onData);
    }),
    10_000,
    'a stream to open',
  );
  return socket;
}

function readRssMB(pid: number): number {
  const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`cannot read the RSS of process ${pid}`);
  return kb / 1024;
}

/** CPU time (user + system) the process has used, from /proc: load-independent, unlike latency. */
function readCpuMs(pid: number): number {
  // Fields after the command name, which is in parentheses and may hold spaces: utime is the 12th, stime the 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}
/** Linux's USER_HZ, the unit of /proc/<pid>/stat times: 100 on every mainstream architecture. */
const CLOCK_TICKS_PER_SECOND = 100;

const round = (n: number) => Math.round(n * 10) / 10;
