import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { waitFor } from './wait-for.js';

/**
 * One redis-server (or redis-sentinel) child on loopback, in a temp directory of its own, for the
 * tests that build a Sentinel set or a Redis Cluster out of several. No persistence: the point of
 * those tests is replication and failover, not restarts from disk.
 */
export interface RedisServerProcess {
  readonly port: number;
  readonly dir: string;
  readonly proc: ChildProcess;
  /** A plain client to this one server (not through Sentinel or the cluster; one per server), closed by stop(). */
  client(): Redis;
  /** Everything it printed, for failure messages. */
  output(): string;
  /** Kills it with `signal` (default SIGTERM) and waits for the exit; removes its directory. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface RedisServerOptions {
  /** `redis-server` (default) or `redis-sentinel`. */
  binary?: string;
  port: number;
  /** Config file lines (sentinels need a writable config file; everything else goes here too). */
  config: string[];
}

export async function startRedisServerProcess({ binary = 'redis-server', port, config }: RedisServerOptions): Promise<RedisServerProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), `werkpilot-${path.basename(binary)}-${port}-`));
  const file = path.join(dir, 'redis.conf');
  const lines = [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'save ""', 'appendonly no', ...config];
  writeFileSync(file, `${lines.join('\n')}\n`);
  const proc = spawn(binary, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  let plain: Redis | undefined;
  const server: RedisServerProcess = {
    port,
    dir,
    proc,
    client() {
      if (!plain) {
        plain = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
        plain.on('error', () => {});
      }
      return plain;
    },
    output: () => out,
    async stop(signal = 'SIGTERM') {
      plain?.disconnect();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  probe.on('error', () => {});
  try {
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`${binary} on port ${port} exited: ${out.slice(-1000)}`);
        try {
          if (probe.status !== 'ready') await probe.connect();
          return (await probe.ping()) === 'PONG';
        } catch {
          probe.disconnect();
          return false;
        }
      },
      { timeoutMs: 15_000, intervalMs: 50, what: `${binary} answering on port ${port}` },
    );
  } finally {
    probe.disconnect();
  }
  return server;
}
