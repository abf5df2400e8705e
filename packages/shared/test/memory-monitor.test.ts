import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { Worker } from 'bullmq';
import { MemoryMonitor, createKeys, createLogger, runJobOptions, type AgentDefinition, type Logger, type ProcessMemory } from '@werkpilot/shared';
import { REPO_ROOT, createAgentCluster, uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const retention = { dlqRetain: 100, completedRetain: 1000 };

function reading(heapPercent: number): ProcessMemory {
  return { heapPercent, rssMB: 100, heapUsedMB: heapPercent, heapLimitMB: 100 };
}

/** A monitor whose readings come from `levels` (the last one repeats), recording events and log lines. */
function monitorWith(levels: number[], gc: (() => void) | null) {
  const events: { type: string; data: Record<string, unknown> }[] = [];
  const lines: string[] = [];
  const capture = (level: string) => (obj: unknown, msg?: string) => lines.push(`${level} ${typeof obj === 'string' ? obj : (msg ?? '')}`);
  // A logger that records lines, so the test can count warnings.
  const scoped = { info: capture('info'), warn: capture('warn'), error: capture('error'), debug: () => {} } as unknown as Logger;
  let i = 0;
  // The clock moves only between readings: an injected gc takes no time, so a check never falls
  // inside the previous forced GC's time budget, however slow the machine running the test is.
  let clock = 0;
  const monitor = new MemoryMonitor({
    log: scoped,
    intervalMs: 60_000,
    now: () => clock,
    read: () => {
      clock += 1000;
      return reading(levels[Math.min(i++, levels.length - 1)]!);
    },
    gc,
    publish: async (type, data) => {
      events.push({ type, data });
    },
  });
  return { monitor, events, lines };
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

describe('memory monitor thresholds (injected readings)', () => {
  it('does nothing below 80 %', async () => {
    const { monitor, events } = monitorWith([50], () => {});
    expect((await monitor.check()).action).toBe('none');
    expect(events).toEqual([]);
    expect(monitor.isUnderPressure).toBe(false);
  });

  it('runs gc at 80 % and publishes memory:gc with the heap before and after', async () => {
    let collections = 0;
    const { monitor, events } = monitorWith([85, 60], () => collections++);
    const check = await monitor.check();
    expect(check).toMatchObject({ action: 'gc', isUnderPressure: false, memory: { heapPercent: 60 } });
    expect(collections).toBe(1);
    expect(events).toEqual([{ type: 'memory:gc', data: expect.objectContaining({ heapPercentBefore: 85, heapPercent: 60 }) }]);
  });

  it('warns once, with the fix, when gc is not exposed', async () => {
    const { monitor, lines, events } = monitorWith([85], null);
    await monitor.check();
    await monitor.check();
    const warnings = lines.filter((l) => l.startsWith('warn'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('--expose-gc');
    expect(events).toEqual([]);
  });

  it('enters pressure at 90 % (after gc), hands back only priority-3 runs, and recovers under 70 %', async () => {
    // check 1: 95 → gc → 93 (pressure); check 2: 85 → gc → 75 (still); check 3: 65 (recovered)
    const { monitor, events } = monitorWith([95, 93, 85, 75, 65], () => {});
    await monitor.check();
    expect(monitor.isUnderPressure).toBe(true);
    expect(monitor.handBack({ priority: 3 })).toMatch(/memory pressure \(heap 93%\)/);
    expect(monitor.handBack({ priority: 1 })).toBeUndefined();
    expect(monitor.handBack({ priority: 2 })).toBeUndefined();
    await monitor.check();
    expect(monitor.isUnderPressure).toBe(true);
    await monitor.check();
    expect(monitor.isUnderPressure).toBe(false);
    expect(monitor.handBack({ priority: 3 })).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(['memory:gc', 'memory:pressure', 'memory:gc', 'memory:recovered']);
  });

  it('does not enter pressure when gc brings the heap under 90 %', async () => {
    const { monitor, events } = monitorWith([95, 50], () => {});
    await monitor.check();
    expect(monitor.isUnderPressure).toBe(false);
    expect(events.map((e) => e.type)).toEqual(['memory:gc']);
  });
});

describe('memory pressure on a real worker', () => {
  it('hands priority-3 runs back without spending an attempt while running priority-1 runs; another worker takes them', async () => {
    const keys = createKeys(uniquePrefix());
    const ran: string[] = [];
    const agents: Partial<AgentDefinition>[] = [
      { name: 'critical', priority: 1, retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 100 } }, run: async (ctx) => void ran.push(`critical@${ctx.runId}`) },
      { name: 'normal', priority: 3, retry: { attempts: 1, backoff: { type: 'exponential', delayMs: 100 } }, run: async () => void ran.push('normal') },
    ];
    const log = createLogger({ level: 'silent', name: 'test' });
    const cluster = await createAgentCluster(redis, agents, { log, keys });
    cleanups.push(() => cluster.close());
    const { registry, queues } = cluster;
    const startWorker = (id: string, monitor?: MemoryMonitor): Promise<Worker> => cluster.startWorker({ id, concurrency: 2, wire: () => (monitor ? { handBack: monitor.handBack } : {}) });

    const { monitor } = monitorWith([95], () => {});
    await monitor.check();
    expect(monitor.isUnderPressure).toBe(true);
    await startWorker('pressured', monitor);

    const normal = await queues.agents.add('normal', { agent: 'normal', trigger: 'manual' }, runJobOptions(registry.require('normal'), retention));
    const critical = await queues.agents.add('critical', { agent: 'critical', trigger: 'manual' }, runJobOptions(registry.require('critical'), retention));
    await waitFor(async () => (await queues.agents.getJobState(critical.id!)) === 'completed', { what: 'the priority-1 run completed' });
    // The pressured worker has taken and handed back the priority-3 run at least once by now.
    await waitFor(async () => ((await queues.agents.getJob(normal.id!))?.attemptsStarted ?? 0) >= 2, { what: 'the priority-3 run handed back' });
    const handedBack = (await queues.agents.getJob(normal.id!))!;
    expect(['waiting', 'prioritized', 'active']).toContain(await handedBack.getState());
    expect(handedBack.attemptsMade).toBe(0);
    expect(ran).toEqual([`critical@${critical.id}`]);

    await startWorker('relaxed');
    await waitFor(async () => (await queues.agents.getJobState(normal.id!)) === 'completed', { timeoutMs: 15_000, what: 'the priority-3 run completed elsewhere' });
    const done = (await queues.agents.getJob(normal.id!))!;
    expect(done.attemptsMade).toBe(1); // one attempt allowed, none spent by the hand-backs
    expect(done.returnvalue).toMatchObject({ outcome: 'success', workerId: 'relaxed' });
  }, 30_000);
});

describe('memory monitor in a real process', () => {
  it('reports gc, pressure and recovery as a child with a 128 MB heap fills and frees it', async () => {
    const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fill-heap.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', '--expose-gc', '--max-old-space-size=128', '--max-semi-space-size=1', fixture], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, output.slice(-2000)).toBe(0);
    const events = output
      .split('\n')
      .filter((l) => l.startsWith('{"event"'))
      .map((l) => JSON.parse(l) as { event: string; heapPercent: number });
    const types = events.map((e) => e.event);
    expect(types).toContain('memory:gc');
    const pressure = events.find((e) => e.event === 'memory:pressure')!;
    const recovered = events.find((e) => e.event === 'memory:recovered')!;
    expect(pressure.heapPercent).toBeGreaterThanOrEqual(90);
    expect(recovered.heapPercent).toBeLessThan(70);
    expect(types.indexOf('memory:pressure')).toBeLessThan(types.indexOf('memory:recovered'));
  }, 60_000);
});
