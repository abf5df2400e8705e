/**
 * `werkpilot start` (and `pnpm start`): the whole system on one machine — a Redis (found or
 * started), the scheduler, one worker and the demo agents, dashboard on http://localhost:3001.
 * Ctrl-C stops everything, the Redis it started last, after the processes have drained into it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, createLogger, describeRedisTarget, listenForTermination, loadConfig, maskUrlCredentials, provisionRedis } from '@werkpilot/shared';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** How long past `SHUTDOWN_GRACE_MS` a child may take to exit before it is killed. */
const STOP_MARGIN_MS = 15_000;

/** Shard i's scheduler listens this far above PORT (3001, 3011, 3021, …: clear of the worker's 3002). */
const SHARD_PORT_STEP = 10;

/**
 * The processes `werkpilot start` runs: a scheduler and a worker; with several shards
 * (WERKPILOT_SHARDS) a scheduler per shard, each on its own port, and one worker serving them all.
 */
function startedProcesses(shards: number, port: number): { name: string; role: 'scheduler' | 'worker'; extraEnv: NodeJS.ProcessEnv }[] {
  if (shards === 1)
    return [
      { name: 'scheduler', role: 'scheduler', extraEnv: {} },
      { name: 'worker', role: 'worker', extraEnv: {} },
    ];
  return [
    ...Array.from({ length: shards }, (_, shard) => ({
      name: `scheduler (shard ${shard})`,
      role: 'scheduler' as const,
      extraEnv: { WERKPILOT_SHARD: String(shard), PORT: String(port === 0 ? 0 : port + SHARD_PORT_STEP * shard) },
    })),
    { name: 'worker', role: 'worker', extraEnv: {} },
  ];
}

export async function runStart(): Promise<void> {
  const config = loadConfig();
  const lastPort = config.port + SHARD_PORT_STEP * (config.shards - 1);
  if (
    config.shards > 1 &&
    config.port !== 0 &&
    (lastPort > 65535 || ((config.workerHttpPort - config.port) % SHARD_PORT_STEP === 0 && config.workerHttpPort > config.port && config.workerHttpPort <= lastPort))
  ) {
    throw new ConfigError(
      `WERKPILOT_SHARDS=${config.shards} puts the schedulers on PORT + ${SHARD_PORT_STEP} × shard (${config.port} to ${lastPort}), which ${lastPort > 65535 ? 'runs past 65535' : `includes WORKER_HTTP_PORT (${config.workerHttpPort})`}: choose another PORT`,
    );
  }
  const log = createLogger({ level: config.logLevel, name: 'start' });
  const target = config.redisTarget;
  let redis: { stop(): Promise<void> };
  let env: NodeJS.ProcessEnv = process.env;
  if (target.kind !== 'single') {
    // A Sentinel set or a cluster is run by its operator: never a redis-server of our own beside
    // it. The children read the same REDIS_SENTINELS / REDIS_CLUSTER_NODES from the environment.
    log.info(`using the Redis ${describeRedisTarget(target)}`);
    redis = { stop: async () => {} };
  } else {
    const provisioned = await provisionRedis({
      url: target.url,
      dataDir: path.join(root, '.data', 'redis'),
      preferredPort: Number(new URL(target.url).port || 6379),
      hz: 100,
    });
    // The logger masks the `url` field; the message masks its own copy (a REDIS_URL may hold a password).
    const shownUrl = maskUrlCredentials(provisioned.url);
    if (provisioned.source === 'external') log.info({ url: provisioned.url }, `using the Redis at ${shownUrl}`);
    else
      log.info(
        { url: provisioned.url },
        `started ${provisioned.source === 'docker' ? 'a redis:7 container' : 'redis-server'} at ${shownUrl} (data in .data/redis, AOF on); it stops when you press Ctrl-C`,
      );
    redis = provisioned;
    env = { ...process.env, REDIS_URL: provisioned.url };
  }

  const children = new Map<string, ChildProcess>();
  for (const { name, role, extraEnv } of startedProcesses(config.shards, config.port)) {
    // The same binary, in the same mode (compiled, or the sources under tsx in development), runs
    // each role. Own process groups: one Ctrl-C reaches only us, and we send each child exactly one
    // SIGTERM (a second signal would make it exit at once, skipping its graceful shutdown). The IPC
    // channel is how a child notices that we are gone, however we ended (see stopWithParent).
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, role], {
      cwd: root,
      env: { ...env, ...extraEnv },
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
      detached: true,
    });
    children.set(name, child);
  }

  let stopping = false;
  const exits = [...children.entries()].map(
    ([role, child]) =>
      new Promise<number>((resolve) =>
        child.once('exit', (code, signal) => {
          children.delete(role);
          if (!stopping) {
            log.error({ role, code, signal }, `${role} exited; stopping the rest`);
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
    // A child that does not finish its shutdown in time (its event loop blocked) is killed: nothing
    // outlives `werkpilot start`.
    const deadline = setTimeout(() => {
      for (const [role, child] of children) {
        log.warn({ role }, `${role} did not stop within ${config.shutdownGraceMs + STOP_MARGIN_MS} ms; killing it`);
        child.kill('SIGKILL');
      }
    }, config.shutdownGraceMs + STOP_MARGIN_MS);
    await Promise.all(exits);
    clearTimeout(deadline);
    await redis.stop();
    process.exit(exitCode);
  };
  listenForTermination({
    onFirst: () => {
      log.info('stopping (press Ctrl-C again to stop at once)');
      void stop(0);
    },
    onRepeat: () => {
      for (const child of children.values()) child.kill('SIGKILL');
      void redis.stop().finally(() => process.exit(1));
    },
  });
}
