/**
 * `pnpm start`: the whole system on one machine — a Redis (found or started), the scheduler, one
 * worker and the demo agents, dashboard on http://localhost:3001. Ctrl-C stops everything, the
 * Redis it started last, after the processes have drained into it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, loadConfig, maskUrlCredentials, provisionRedis, runProcess } from '@werkpilot/shared';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

runProcess('werkpilot start', async () => {
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, name: 'start' });
  const redis = await provisionRedis({
    url: config.redisUrl,
    dataDir: path.join(root, '.data', 'redis'),
    preferredPort: Number(new URL(config.redisUrl).port || 6379),
    hz: 100,
  });
  // The logger masks the `url` field; the message masks its own copy (a REDIS_URL may hold a password).
  const shownUrl = maskUrlCredentials(redis.url);
  if (redis.source === 'external') log.info({ url: redis.url }, `using the Redis at ${shownUrl}`);
  else log.info({ url: redis.url }, `started ${redis.source === 'docker' ? 'a redis:7 container' : 'redis-server'} at ${shownUrl} (data in .data/redis, AOF on); it stops when you press Ctrl-C`);

  const env = { ...process.env, REDIS_URL: redis.url };
  const children = new Map<string, ChildProcess>();
  for (const app of ['scheduler', 'worker'] as const) {
    // Own process groups: one Ctrl-C reaches only us, and we send each child exactly one SIGTERM
    // (a second signal would make it exit at once, skipping its graceful shutdown).
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'apps', app, 'src', 'main.ts')], {
      cwd: root,
      env,
      stdio: 'inherit',
      detached: true,
    });
    children.set(app, child);
  }

  let stopping = false;
  const exits = [...children.entries()].map(
    ([app, child]) =>
      new Promise<number>((resolve) =>
        child.once('exit', (code, signal) => {
          children.delete(app);
          if (!stopping) {
            log.error({ app, code, signal }, `${app} exited; stopping the rest`);
            void stop(typeof code === 'number' && code !== 0 ? code : 1);
          }
          resolve(code ?? 1);
        }),
      ),
  );

  const stop = async (exitCode: number) => {
    if (stopping) return;
    stopping = true;
    for (const child of children.values()) child.kill('SIGTERM');
    await Promise.all(exits);
    await redis.stop();
    process.exit(exitCode);
  };
  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals === 1) {
      log.info('stopping (press Ctrl-C again to stop at once)');
      void stop(0);
      return;
    }
    for (const child of children.values()) child.kill('SIGKILL');
    void redis.stop().finally(() => process.exit(1));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
});
