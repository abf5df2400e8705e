import type { Queue, Worker } from 'bullmq';
import { createShards, runJobOptions, type Tracing } from '@werkpilot/shared';
import type { BenchRedis } from '../bench-redis.js';
import type { Measurement } from '../measurement.js';
import { RETENTION, noOpFleet, openOrchestratorQueues, startOrchestratorWorker, watchOutcomes } from '../orchestrator.js';
import { addMany, openRawQueue, startRawWorker } from '../raw-bullmq.js';
import { countdown, median, preciseNow, within } from '../samples.js';
import type { Scenario } from '../scenario.js';

/** Runs cycle through this many agents, so concurrent runs are of different agents (overlap). */
const FLEET_SIZE = 200;
const { registry, nameOf } = noOpFleet(FLEET_SIZE);
const jobOptions = runJobOptions(registry.require(nameOf(0)), RETENTION);

export type Side = 'ours' | 'raw';

/** The Redis a drain runs on: one server (BenchRedis) or a cluster (BenchCluster). */
export type DrainRedis = Pick<BenchRedis, 'target' | 'prefix' | 'client' | 'cpuSecondsByServer'>;

/**
 * Drains `count` queued no-op runs with one worker at `concurrency`: runs per second, and the CPU
 * each run cost this (worker) process and the Redis server. The queue is filled while paused and
 * the clock starts at resume, so only processing is timed. With `shards` = K, ours is the fleet
 * split as WERKPILOT_SHARDS=K splits it: each run queued in its agent's shard, one worker process
 * serving every shard (raw BullMQ has one queue whatever K).
 */
export async function drain(redis: DrainRedis, side: Side, concurrency: number, count: number, { tracing, shards = 1 }: { tracing?: Tracing; shards?: number } = {}): Promise<Drained> {
  const prefix = redis.prefix(`tp-${side}`);
  const queues: Queue[] = [];
  const closeQueues: (() => Promise<void>)[] = [];
  if (side === 'ours') {
    const names = Array.from({ length: count }, (_, i) => nameOf(i));
    for (const shard of createShards(registry, prefix, shards).all) {
      const own = names.filter((name) => shard.registry.get(name));
      if (own.length === 0) continue;
      const opened = openOrchestratorQueues(redis.target, shard.prefix);
      const queue = opened.queues.agents as unknown as Queue;
      await queue.pause();
      await addMany(queue, (i) => own[i]!, jobOptions, own.length);
      queues.push(queue);
      closeQueues.push(opened.close);
    }
  } else {
    const queue = openRawQueue(redis.client(), prefix);
    await queue.pause();
    await addMany(queue, nameOf, jobOptions, count);
    queues.push(queue);
    closeQueues.push(() => queue.close());
  }

  let workers: Worker[];
  let closeWorkers: () => Promise<void>;
  if (side === 'ours') {
    const started = await startOrchestratorWorker({ url: redis.target, prefix, registry, concurrency, tracing, shards });
    workers = started.workers as unknown as Worker[];
    closeWorkers = started.close;
  } else {
    const worker = await startRawWorker(redis.client(), prefix, concurrency);
    workers = [worker];
    closeWorkers = () => worker.close();
  }
  const completions = countdown(count);
  const outcomes = workers.map((worker) => {
    worker.on('completed', completions.tick);
    worker.on('failed', (_job, err) => console.error(`bench: a ${side} no-op run failed: ${err.message}`));
    return side === 'ours' ? watchOutcomes(worker, `${count} runs at concurrency ${concurrency}`) : undefined;
  });

  const redisCpuBefore = await redis.cpuSecondsByServer();
  const cpuBefore = process.cpuUsage();
  const startedAt = preciseNow();
  await Promise.all(queues.map((queue) => queue.resume()));
  await within(completions.done, 120_000 + count * 10, `${count} ${side} runs at concurrency ${concurrency}`);
  const seconds = (preciseNow() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const redisCpuAfter = await redis.cpuSecondsByServer();
  await closeWorkers();
  await Promise.all(closeQueues.map((close) => close()));
  for (const watched of outcomes) watched?.check();
  const redisCpuMicrosByServer = redisCpuAfter.map((after, i) => ((after - redisCpuBefore[i]!) * 1e6) / count);
  return {
    runsPerSecond: count / seconds,
    nodeCpuMicros: (cpu.user + cpu.system) / count,
    redisCpuMicros: redisCpuMicrosByServer.reduce((sum, micros) => sum + micros, 0),
    redisCpuMicrosByServer,
  };
}

export interface Drained {
  runsPerSecond: number;
  /** CPU time of this process (the worker's side; the producer is idle while draining) per run. */
  nodeCpuMicros: number;
  /** CPU time of the Redis server per run (on a cluster, of all its masters together). */
  redisCpuMicros: number;
  /** The same, of each server (one on a single Redis; each master, in their order, on a cluster). */
  redisCpuMicrosByServer: number[];
}

/** Medians of each side over `rounds`, alternating which side goes first. */
export async function compareThroughput(redis: BenchRedis, concurrency: number, count: number, rounds: number): Promise<{ ours: Drained; raw: Drained }> {
  const runs: Record<Side, Drained[]> = { ours: [], raw: [] };
  for (let round = 0; round < rounds; round += 1) {
    const order: Side[] = round % 2 === 0 ? ['raw', 'ours'] : ['ours', 'raw'];
    for (const side of order) runs[side].push(await drain(redis, side, concurrency, count));
  }
  return { ours: medianDrained(runs.ours), raw: medianDrained(runs.raw) };
}

/** Each figure's median over the rounds (per server, each server's own). */
export function medianDrained(list: Drained[]): Drained {
  return {
    runsPerSecond: median(list.map((d) => d.runsPerSecond)),
    nodeCpuMicros: median(list.map((d) => d.nodeCpuMicros)),
    redisCpuMicros: median(list.map((d) => d.redisCpuMicros)),
    redisCpuMicrosByServer: list[0]!.redisCpuMicrosByServer.map((_, i) => median(list.map((d) => d.redisCpuMicrosByServer[i]!))),
  };
}

export const throughput: Scenario = {
  name: 'throughput',
  title: `no-op runs/s (cycling ${FLEET_SIZE} agents) through the full worker path vs raw BullMQ Queue+Worker, same job options`,
  async run({ quick, redis, progress }) {
    const rounds = quick ? 1 : 3;
    // Warm both paths up (JIT, connections, Lua script cache) before anything is timed.
    await drain(redis, 'raw', 10, quick ? 100 : 1000);
    await drain(redis, 'ours', 10, quick ? 100 : 1000);
    const rows: Measurement[] = [];
    for (const [concurrency, count] of [
      [1, quick ? 200 : 3000],
      [50, quick ? 1000 : 10000],
    ] as const) {
      progress(`throughput: ${count} runs × ${rounds} rounds at concurrency ${concurrency}`);
      const { ours, raw } = await compareThroughput(redis, concurrency, count, rounds);
      rows.push({
        metric: `runs/s at concurrency ${concurrency}`,
        value: ours.runsPerSecond,
        baseline: raw.runsPerSecond,
        unit: 'runs/s',
        ...(concurrency === 50 ? { target: { on: 'ratio' as const, min: 0.85 } } : {}),
      });
      if (concurrency === 50) {
        // Node and Redis share the machine's cores: CPU per run is what bounds the ratio above.
        rows.push({ metric: 'worker process CPU per run at c50', value: ours.nodeCpuMicros, baseline: raw.nodeCpuMicros, unit: 'µs' });
        rows.push({ metric: 'Redis CPU per run at c50', value: ours.redisCpuMicros, baseline: raw.redisCpuMicros, unit: 'µs' });
      }
    }
    return rows;
  },
};
