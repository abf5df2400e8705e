import express from 'express';
import type { Server } from 'node:http';
import {
  AgentStateStore,
  EventBus,
  createAgentWorker,
  createSystemWorker,
  type SystemJobHandler,
  createKeys,
  createLogger,
  createRedisConnection,
  loadConfig,
  loadRegistry,
  makeWorkerId,
  runProcess,
} from '@werkpilot/shared';

runProcess('werkpilot worker', async () => {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'worker' });
  const registry = await loadRegistry(config.agentsDir);
  const workerId = makeWorkerId();

  const keys = createKeys(config.prefix);
  const redis = createRedisConnection({ url: config.redisUrl, role: 'worker', log });
  const bus = new EventBus({ redis, keys, log });
  const state = new AgentStateStore({ redis, keys });
  const worker = createAgentWorker({
    connection: redis,
    redis,
    keys,
    registry,
    state,
    bus,
    log,
    workerId,
    concurrency: config.workerConcurrency,
  });
  // Internal jobs by name; each capability registers its handler here.
  const systemHandlers: Record<string, SystemJobHandler> = {};
  const systemWorker = createSystemWorker({ connection: redis, keys, log, workerId, handlers: systemHandlers });
  await Promise.all([worker.waitUntilReady(), systemWorker.waitUntilReady()]);
  await bus.publish('worker:online', { workerId, concurrency: config.workerConcurrency, agents: registry.names() });
  log.info({ workerId, concurrency: config.workerConcurrency, agents: registry.size }, 'worker online');

  let server: Server | undefined;
  if (config.workerHttpPort > 0) {
    const app = express();
    app.get('/healthz', (_req, res) => {
      res.json({ status: worker.isRunning() ? 'ok' : 'stopped', workerId });
    });
    server = app.listen(config.workerHttpPort);
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    await Promise.all([worker.close(), systemWorker.close()]);
    await bus.publish('worker:offline', { workerId });
    if (server) await new Promise((resolve) => server.close(resolve));
    await bus.close();
    await redis.quit();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
});
