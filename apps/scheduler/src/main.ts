import type { Server } from 'node:http';
import {
  AgentStateStore,
  EventBus,
  createKeys,
  createLogger,
  createQueues,
  createRedisConnection,
  loadConfig,
  loadRegistry,
  reconcileJobSchedulers,
  runProcess,
} from '@werkpilot/shared';
import { createHttpApp } from './http/app.js';

runProcess('werkpilot scheduler', async () => {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'scheduler' });
  // The registry is validated before any connection is opened: an invalid one writes nothing.
  const registry = await loadRegistry(config.agentsDir);
  log.info({ agents: registry.size, layers: registry.layers.length }, 'registry loaded');

  const keys = createKeys(config.prefix);
  const redis = createRedisConnection({ url: config.redisUrl, role: 'scheduler', log });
  const queues = createQueues({ connection: redis, keys });
  const bus = new EventBus({ redis, keys, log });
  const state = new AgentStateStore({ redis, keys });
  const retention = { dlqRetain: config.dlqRetain, completedRetain: config.completedRetain };

  await reconcileJobSchedulers({ queue: queues.agents, registry, retention, log });

  const app = createHttpApp({
    snapshot: { queues, registry, state },
    log,
    isReady: async () => (await redis.ping()) === 'PONG',
  });
  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(config.port, () => resolve(s)).once('error', reject);
  });
  log.info({ port: config.port }, `dashboard on http://localhost:${config.port}`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    await new Promise((resolve) => server.close(resolve));
    await bus.close();
    await queues.close();
    await redis.quit();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
});
