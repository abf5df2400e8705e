import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { EventBus } from '../messaging/bus.js';
import { createFaultReporter, type ProcessFault } from './process-faults.js';
import { closeRedisConnection } from '../redis/redis-connection.js';
import { GracefulShutdown, type ShutdownStep } from './shutdown.js';

export interface ProcessShutdownOptions {
  log: Logger;
  graceMs: number;
  /** The process's command connection: the shutdown's last cleanup, and what "Redis is up" asks. */
  redis: Redis;
  /** Where the shutdown's and the faults' events go. */
  bus: Pick<EventBus, 'publish'>;
  /** Added to the shutdown's events (`{ process, pid }` or `{ process, workerId }`). */
  identity: Record<string, unknown>;
  /** Added to each fault event. */
  faultIdentity: Record<string, unknown>;
  stepNames?: Record<ShutdownStep, string>;
  /** The tracing exporter, if tracing is on: it sends the last spans just before the connection closes. */
  tracing?: { shutdown(): Promise<void> } | undefined;
}

/**
 * What both apps set up first: the graceful shutdown, listening for signals, and the reporter of
 * unhandled rejections; the connection and the tracing exporter are registered as the shutdown's
 * last cleanups (step 6). Each app installs its fault policy with these and registers the rest.
 */
export function createProcessShutdown(options: ProcessShutdownOptions): { shutdown: GracefulShutdown; reportFault: (fault: ProcessFault) => void } {
  const { log, redis, bus, tracing } = options;
  const isRedisUp = () => redis.status === 'ready';
  const shutdown = new GracefulShutdown({
    log,
    graceMs: options.graceMs,
    isRedisUp,
    publish: (type, data) => bus.publish(type, data),
    identity: options.identity,
    ...(options.stepNames ? { stepNames: options.stepNames } : {}),
  });
  shutdown.listen();
  const reportFault = createFaultReporter({ publish: (type, data, agent) => bus.publish(type, data, agent), isRedisUp, identity: options.faultIdentity, log });
  shutdown.register(6, 'redis connection', () => closeRedisConnection(redis));
  if (tracing) shutdown.register(6, 'tracing: export the last spans', () => tracing.shutdown());
  return { shutdown, reportFault };
}
