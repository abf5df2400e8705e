import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { RedisUnavailableError } from '../process/errors.js';
import { redisAnswers } from './redis-connection.js';

/** A Redis this process found or started, and how to let it go. */
export interface ProvisionedRedis {
  url: string;
  /** Where it came from: already running, a child `redis-server`, or a Docker container. */
  source: 'external' | 'redis-server' | 'docker';
  /** Stops what this process started (nothing for an external Redis). */
  stop(): Promise<void>;
  /**
   * Only for a child `redis-server`: stops it, waits `downMs`, and starts it again on the same
   * port and data directory (with AOF, queued work survives). For outage tests.
   */
  restart?(options?: { downMs?: number }): Promise<void>;
  /** Only for a child `redis-server`: its pid while it runs (tests freeze it with SIGSTOP). */
  readonly pid?: number | undefined;
}

export interface ProvisionOptions {
  /** Use this Redis when it answers PING. */
  url?: string;
  /** Data directory for a child redis-server; AOF is on when given, off (no persistence) without. */
  dataDir?: string;
  /** Port for a child redis-server: this one if it is free, else any free port. */
  preferredPort?: number;
  /** Redis `hz`: cron lateness is bounded by 1000/hz ms, so ours run at 100. */
  hz?: number;
  /** Fall back to a redis:7 container when no redis-server binary exists (default true). */
  allowDocker?: boolean;
}

export const HOW_TO_GET_REDIS = 'no Redis found: set REDIS_URL to a running Redis, or install one (apt-get install redis-server, brew install redis) or start Docker (docker compose up)';

/**
 * The Redis chain shared by `pnpm start` and the test harness: whatever answers at `url`; else a
 * `redis-server` child of our own; else, when a Docker engine answers, a `redis:7` container; else
 * a RedisUnavailableError saying how to get Redis.
 */
export async function provisionRedis(options: ProvisionOptions = {}): Promise<ProvisionedRedis> {
  if (options.url && (await redisAnswers(options.url))) {
    return { url: options.url, source: 'external', stop: async () => {} };
  }
  if (hasRedisServer()) return startRedisServer(options);
  if (options.allowDocker !== false) {
    const container = await startRedisContainer(options.hz ?? 100).catch(() => undefined);
    if (container) return container;
  }
  throw new RedisUnavailableError(HOW_TO_GET_REDIS);
}

function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function startRedisServer(options: ProvisionOptions): Promise<ProvisionedRedis> {
  const port = options.preferredPort && (await isPortFree(options.preferredPort)) ? options.preferredPort : await freePort();
  const url = `redis://127.0.0.1:${port}`;
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--hz', String(options.hz ?? 100), '--daemonize', 'no'];
  if (options.dataDir) {
    mkdirSync(options.dataDir, { recursive: true });
    args.push('--appendonly', 'yes', '--appendfsync', 'everysec', '--dir', path.resolve(options.dataDir));
  } else {
    args.push('--appendonly', 'no');
  }

  let child: ChildProcess | undefined;
  // Should this process exit without calling stop() (a crash, a test runner's worker torn down),
  // the server goes with it rather than lingering on its port.
  const stopOnExit = () => child?.kill('SIGTERM');
  process.once('exit', stopOnExit);
  const start = async () => {
    // Its own process group: a Ctrl-C in the terminal must not kill Redis while our processes
    // still drain into it; we stop it ourselves, last.
    const proc = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    child = proc;
    let stderr = '';
    proc.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + 10_000;
    while (!(await redisAnswers(url, 200))) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new RedisUnavailableError(`redis-server on port ${port} did not start: ${stderr.trim() || 'no answer to PING'}`);
      }
      await sleep(25);
    }
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    process.removeListener('exit', stopOnExit);
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  await start();
  return {
    url,
    source: 'redis-server',
    get pid() {
      return child?.exitCode === null ? child.pid : undefined;
    },
    stop,
    restart: async ({ downMs = 0 } = {}) => {
      await stop();
      if (downMs > 0) await sleep(downMs);
      process.once('exit', stopOnExit);
      await start();
    },
  };
}

/**
 * testcontainers is a development dependency: production images get Redis from REDIS_URL, and this
 * fallback (for `pnpm start` and the tests on a machine with Docker but no redis-server) fails
 * quietly there, falling through to the "how to get Redis" message.
 */
async function startRedisContainer(hz: number): Promise<ProvisionedRedis> {
  const { GenericContainer } = await import('testcontainers');
  const container = await new GenericContainer('redis:7')
    .withExposedPorts(6379)
    .withCommand(['redis-server', '--hz', String(hz), '--save', ''])
    .start();
  return {
    url: `redis://${container.getHost()}:${container.getMappedPort(6379)}`,
    source: 'docker',
    stop: async () => {
      await container.stop();
    },
  };
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
