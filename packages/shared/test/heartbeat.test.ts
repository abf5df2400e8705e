import { describe, expect, it } from 'vitest';
import { ClusterSnapshotBuilder, WorkerHeartbeat, buildRegistry, createKeys, createLogger, createQueues, hasLiveWorker, listLiveWorkers } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });

function describeWorker(id: string) {
  return () => ({
    id,
    host: 'test-host',
    pid: 42,
    concurrency: 4,
    active: 1,
    heapPercent: 12.5,
    rssMB: 80,
    startedAt: new Date(0).toISOString(),
    version: '0.1.0',
  });
}

describe('worker heartbeats', () => {
  it('lists a beating worker with its figures and drops it when its TTL passes', async () => {
    const client = redis.client();
    const keys = createKeys(uniquePrefix());
    let now = 1_000_000;
    const clock = () => now;
    const heartbeat = new WorkerHeartbeat({ redis: client, keys, log, describe: describeWorker('w1'), intervalMs: 1000, clock });
    await heartbeat.beat();

    const [worker] = await listLiveWorkers({ redis: client, keys, clock });
    expect(worker).toMatchObject({ id: 'w1', host: 'test-host', pid: 42, concurrency: 4, active: 1, heapPercent: 12.5, rssMB: 80, version: '0.1.0' });
    expect(await hasLiveWorker({ redis: client, keys, clock })).toBe(true);

    now += 3001; // past the TTL (3 × interval) as the index sees it
    expect(await listLiveWorkers({ redis: client, keys, clock })).toEqual([]);
    expect(await hasLiveWorker({ redis: client, keys, clock })).toBe(false);
  });

  it('removes a worker at once on graceful shutdown', async () => {
    const client = redis.client();
    const keys = createKeys(uniquePrefix());
    const a = new WorkerHeartbeat({ redis: client, keys, log, describe: describeWorker('a') });
    const b = new WorkerHeartbeat({ redis: client, keys, log, describe: describeWorker('b') });
    await a.start();
    await b.start();
    expect((await listLiveWorkers({ redis: client, keys })).map((w) => w.id)).toEqual(['a', 'b']);
    await a.remove();
    expect((await listLiveWorkers({ redis: client, keys })).map((w) => w.id)).toEqual(['b']);
    await b.remove();
  });

  it('adds the live workers to the metrics snapshot as system.workers', async () => {
    const client = redis.client();
    const keys = createKeys(uniquePrefix());
    const heartbeat = new WorkerHeartbeat({ redis: client, keys, log, describe: describeWorker('w9') });
    await heartbeat.beat();
    const queues = createQueues({ connection: client, keys });
    const registry = buildRegistry([]);
    const { view: snapshot } = await new ClusterSnapshotBuilder({ redis: client, keys, queues, registry, agentHistograms: false }).build();
    expect((snapshot.system.workers as { id: string }[]).map((w) => w.id)).toEqual(['w9']);
    await heartbeat.remove();
    await queues.close();
  });
});
