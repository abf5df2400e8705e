/**
 * Where a process finds Redis: one server (`REDIS_URL`, the default), a Sentinel set that names the
 * current primary (`REDIS_SENTINELS` + `REDIS_SENTINEL_NAME`), or a Redis Cluster
 * (`REDIS_CLUSTER_NODES`). config.ts reads it from the environment; redis-connection.ts turns it
 * into an ioredis connection. Nothing else needs to know which kind it is.
 */
import { maskUrlCredentials } from '../observability/redaction.js';

export interface RedisNode {
  host: string;
  port: number;
}

export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'sentinel'; sentinels: RedisNode[]; name: string; password?: string | undefined }
  | { kind: 'cluster'; nodes: RedisNode[]; password?: string | undefined };

const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;

/** Parses `host:port,host:port` (IPv6 in brackets); undefined when any entry is malformed or the list is empty. */
export function parseRedisNodes(list: string): RedisNode[] | undefined {
  const entries = list
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  if (entries.length === 0) return undefined;
  const nodes: RedisNode[] = [];
  for (const entry of entries) {
    const m = HOST_PORT.exec(entry);
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65535) return undefined;
    nodes.push({ host: m[1]!.replace(/^\[|\]$/g, ''), port });
  }
  return nodes;
}

/** The target in one line for logs and messages, without its password. */
export function describeRedisTarget(target: RedisTarget): string {
  const list = (nodes: RedisNode[]) => nodes.map((n) => `${n.host}:${n.port}`).join(',');
  switch (target.kind) {
    case 'single':
      return maskUrlCredentials(target.url);
    case 'sentinel':
      return `sentinel master "${target.name}" via ${list(target.sentinels)}`;
    case 'cluster':
      return `cluster via ${list(target.nodes)}`;
  }
}
