import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, GracefulShutdown, SHUTDOWN_STEPS, createKeys, createLogger, type BusEvent, type Logger } from '@werkpilot/shared';
import { uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A logger that records each line's fields and message. */
function recordingLogger(): { log: Logger; lines: { level: string; msg: string; fields: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  const at = (level: string) => (fields: Record<string, unknown> | string, msg?: string) =>
    lines.push(typeof fields === 'string' ? { level, msg: fields, fields: {} } : { level, msg: msg ?? '', fields });
  return { log: { info: at('info'), warn: at('warn'), error: at('error'), debug: () => {} } as unknown as Logger, lines };
}

async function busRecorder() {
  const client = redis.client();
  const bus = new EventBus({ redis: client, keys: createKeys(uniquePrefix()), log: createLogger({ level: 'silent', name: 'test' }) });
  const events: BusEvent[] = [];
  await bus.subscribe((e) => events.push(e));
  cleanups.push(() => bus.close());
  return { bus, events };
}

describe('graceful shutdown', () => {
  it('runs the six steps in order, each logged with its duration and published as shutdown:step, then exits 0', async () => {
    const { bus, events } = await busRecorder();
    const { log, lines } = recordingLogger();
    const exits: number[] = [];
    const shutdown = new GracefulShutdown({ log, graceMs: 1000, publish: (type, data) => bus.publish(type, data), identity: { process: 'test' }, exit: (c) => exits.push(c) });
    await shutdown.run('SIGTERM');

    expect(exits).toEqual([0]);
    const steps = lines.filter((l) => l.fields.step !== undefined);
    expect(steps.map((l) => l.fields.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const line of steps) {
      expect(line.fields.durationMs).toEqual(expect.any(Number));
      expect(line.msg).toBe(`shutdown step ${line.fields.step}/6: ${SHUTDOWN_STEPS[line.fields.step as 1]} (${line.fields.durationMs} ms)`);
    }
    await waitFor(() => events.filter((e) => e.type === 'shutdown:step').length === 6, { what: 'six shutdown:step events' });
    const published = events.filter((e) => e.type === 'shutdown:step');
    expect(published.map((e) => e.data.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(published[0]!.data).toMatchObject({ process: 'test', name: 'stop intake and timers', durationMs: expect.any(Number) });
    expect(published[5]!.data).toMatchObject({ step: 6, phase: 'starting' });
  });

  it('runs the cleanups of a step in reverse order of registration, and keeps going past a failing one', async () => {
    const { log, lines } = recordingLogger();
    const order: string[] = [];
    const shutdown = new GracefulShutdown({ log, graceMs: 1000, exit: () => {} });
    shutdown.register(6, 'redis', () => order.push('redis'));
    shutdown.register(5, 'bus', () => order.push('bus'));
    shutdown.register(5, 'http', () => {
      order.push('http');
      throw new Error('socket already closed');
    });
    const unregister = shutdown.register(5, 'released early', () => order.push('released early'));
    shutdown.register(1, 'timers', () => order.push('timers'));
    unregister();
    await shutdown.run('SIGINT');
    expect(order).toEqual(['timers', 'http', 'bus', 'redis']);
    expect(lines.some((l) => l.level === 'warn' && l.msg === 'shutdown: http failed; moving on')).toBe(true);
  });

  it('waits for running work up to the grace period, signalling when it ends, then moves on', async () => {
    const { log, lines } = recordingLogger();
    let sawGraceOver = false;
    const shutdown = new GracefulShutdown({ log, graceMs: 200, exit: () => {} });
    shutdown.register(
      2,
      'a run that outlives the grace',
      (ctx) =>
        new Promise<void>((resolve) =>
          ctx.graceOver.addEventListener('abort', () => {
            sawGraceOver = true;
            resolve();
          }),
        ),
    );
    shutdown.register(2, 'a run that never ends', () => new Promise(() => {}));
    await shutdown.run('SIGTERM');
    expect(sawGraceOver).toBe(true);
    expect(lines.find((l) => l.fields.step === 2)!.fields).toMatchObject({ graceExceeded: true });
  });

  it('bounds a cleanup that hangs (e.g. on an unreachable Redis) and still reaches step 6', async () => {
    const { log, lines } = recordingLogger();
    const exits: number[] = [];
    const shutdown = new GracefulShutdown({ log, graceMs: 100, cleanupTimeoutMs: 5000, isRedisUp: () => false, exit: (c) => exits.push(c) });
    shutdown.register(4, 'final flush', () => new Promise(() => {}));
    await shutdown.run('SIGTERM');
    // The offline bound (1 s) applies, not the 5 s one.
    expect(lines.some((l) => l.msg === 'shutdown: final flush did not finish within 1000 ms; moving on')).toBe(true);
    expect(exits).toEqual([0]);
  });

  it('runs once however often it is asked', async () => {
    const { log } = recordingLogger();
    let runs = 0;
    const shutdown = new GracefulShutdown({ log, graceMs: 100, exit: () => {} });
    shutdown.register(1, 'count', () => runs++);
    await Promise.all([shutdown.run('SIGTERM'), shutdown.run('SIGINT')]);
    expect(runs).toBe(1);
    expect(shutdown.isShuttingDown).toBe(true);
  });
});
