import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { Redis } from 'ioredis';
import { provisionRedis, type ProvisionedRedis } from '@werkpilot/shared';
import { noteSkipped } from './tools.js';

/** A Redis for one test file: REDIS_URL when set, else a redis-server child, else a container. */
export interface TestRedis {
  readonly url: string;
  /** Whether this file owns the server (a child or container), so it may restart or inspect all of it. */
  readonly isOwned: boolean;
  /** A new ioredis client, closed after the file. */
  client(): Redis;
  /** Restarts an owned redis-server on the same port and data dir (AOF on when `persistent`). */
  restart(options?: { downMs?: number }): Promise<void>;
  /**
   * Freezes an owned redis-server (SIGSTOP: connections stay open, nothing answers) until the
   * returned function thaws it (SIGCONT). A frozen server is thawed after the file in any case.
   */
  freeze(): () => void;
}

export interface TestRedisOptions {
  /** AOF on, in a temp dir, so a restart keeps queued work. */
  persistent?: boolean;
}

/**
 * Gives the calling test file its own Redis, started before its tests and stopped after them.
 * The chain is the one `pnpm start` uses: REDIS_URL if set; else a `redis-server` child on a free
 * port (no persistence unless asked, `hz 100`); else a testcontainers Redis when a Docker engine
 * answers; else a clear error naming what to install. Tests must still use a unique prefix
 * (`uniquePrefix()`), since REDIS_URL may be shared between files.
 */
export function useTestRedis(options: TestRedisOptions = {}): TestRedis {
  let provisioned: ProvisionedRedis | undefined;
  let dataDir: string | undefined;
  const clients: Redis[] = [];

  beforeAll(async () => {
    const external = process.env.REDIS_URL;
    if (options.persistent && !external) dataDir = mkdtempSync(path.join(tmpdir(), 'werkpilot-redis-'));
    provisioned = await provisionRedis({ ...(external ? { url: external } : {}), ...(dataDir ? { dataDir } : {}) });
    if (external && provisioned.source !== 'external') {
      throw new Error(`REDIS_URL=${external} does not answer PING`);
    }
  }, 60_000);

  let thawFrozen: (() => void) | undefined;
  afterAll(async () => {
    thawFrozen?.();
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
    await provisioned?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, 30_000);

  const current = () => {
    if (!provisioned) throw new Error('useTestRedis(): the Redis is only available inside tests and hooks');
    return provisioned;
  };
  return {
    get url() {
      return current().url;
    },
    get isOwned() {
      return current().source !== 'external';
    },
    client() {
      const client = new Redis(current().url, { maxRetriesPerRequest: null });
      client.on('error', () => {});
      clients.push(client);
      return client;
    },
    freeze() {
      const pid = current().pid;
      if (pid === undefined) throw new Error('freeze needs a redis-server owned by the test (unset REDIS_URL)');
      process.kill(pid, 'SIGSTOP');
      const thaw = () => {
        if (thawFrozen !== thaw) return;
        thawFrozen = undefined;
        process.kill(pid, 'SIGCONT');
      };
      thawFrozen = thaw;
      return thaw;
    },
    async restart(opts) {
      const p = current();
      if (!p.restart) throw new Error('restart needs a redis-server owned by the test (unset REDIS_URL)');
      await p.restart(opts);
    },
  };
}

/** A key prefix no other test uses: `t<random>`. */
export function uniquePrefix(): string {
  return `t${randomBytes(5).toString('hex')}`;
}

/**
 * Whether the tests run against a Redis they share (REDIS_URL set): a check that must `act` on its
 * whole Redis — restart, stop, freeze it, or count every client — is then skipped, saying so once.
 * Use it at collection time: `it.skipIf(onSharedRedis('restarts its Redis'))(...)`.
 */
export function onSharedRedis(act: string): boolean {
  const url = process.env.REDIS_URL;
  if (url) noteSkipped(`a check that ${act}: REDIS_URL=${url} points at a shared Redis (unset REDIS_URL to run it)`);
  return Boolean(url);
}
