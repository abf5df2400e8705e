import type { Command } from 'commander';
import { circuitStateOf, type MetricsSnapshot } from '../api-types.js';
import type { CliIo } from '../cli-io.js';
import { withContext } from '../command-context.js';
import { dash, formatAgo, renderFields } from '../table.js';

/** The cluster summary `status` prints (and `--json` returns). */
export interface ClusterStatus {
  url: string;
  leader: { leaderId: string | null; isThisReplicaLeader: boolean | null } | null;
  workers: { live: number; active: number; capacity: number; ids: string[] } | null;
  queues: { waiting: number; active: number; delayed: number; system: number };
  deadLetterQueueSize: number;
  agents: { total: number; healthy: number; degraded: number; unhealthy: number; disabled: number; openCircuits: number };
  unhealthy: { agent: string; reasons: string[] }[];
  memory: { heapPercent: number | null; rssMB: number | null };
}

export function summarise(url: string, snapshot: MetricsSnapshot): ClusterStatus {
  const agents = Object.entries(snapshot.agents);
  const count = (state: string) => agents.filter(([, a]) => a.health === state).length;
  const workers = snapshot.system.workers;
  const scheduler = snapshot.system.scheduler;
  const agentQueue = snapshot.queues?.agents ?? {};
  const systemQueue = snapshot.queues?.system ?? {};
  return {
    url,
    leader: scheduler ? { leaderId: scheduler.leaderId ?? null, isThisReplicaLeader: scheduler.isLeader ?? null } : null,
    workers: workers
      ? {
          live: workers.length,
          active: workers.reduce((n, w) => n + (w.active ?? 0), 0),
          capacity: workers.reduce((n, w) => n + (w.concurrency ?? 0), 0),
          ids: workers.map((w) => w.id),
        }
      : null,
    queues: {
      waiting: snapshot.executionQueueSize,
      active: agentQueue.active ?? 0,
      delayed: agentQueue.delayed ?? 0,
      system: (systemQueue.waiting ?? 0) + (systemQueue.prioritized ?? 0) + (systemQueue.active ?? 0),
    },
    deadLetterQueueSize: snapshot.deadLetterQueueSize,
    agents: {
      total: agents.length,
      healthy: count('healthy'),
      degraded: count('degraded'),
      unhealthy: count('unhealthy'),
      disabled: agents.filter(([, a]) => a.enabled === false).length,
      openCircuits: agents.filter(([, a]) => circuitStateOf(a.circuit) === 'open').length,
    },
    unhealthy: agents.filter(([, a]) => a.health === 'unhealthy').map(([agent, a]) => ({ agent, reasons: a.healthReasons ?? [] })),
    memory: { heapPercent: snapshot.system.memory?.heapPercent ?? null, rssMB: snapshot.system.memory?.rssMB ?? null },
  };
}

export function registerStatus(program: Command, io: CliIo): void {
  program
    .command('status')
    .description('cluster summary: leader, workers, queues, dead-letter queue, unhealthy agents')
    .action(
      withContext(io, async (ctx) => {
        const snapshot = await ctx.api.get<MetricsSnapshot>('/api/metrics');
        const status = summarise(ctx.api.baseUrl, snapshot);
        if (ctx.isJson) return ctx.printJson(status);
        const workers = snapshot.system.workers;
        const fields: [string, string][] = [
          ['API', status.url],
          [
            'Leader',
            status.leader ? (status.leader.leaderId ? `${status.leader.leaderId}${status.leader.isThisReplicaLeader ? ' (this replica)' : ''}` : 'NONE: no scheduler holds the lease') : dash,
          ],
          [
            'Workers',
            status.workers
              ? status.workers.live === 0
                ? 'NONE live: runs are queued but not executed'
                : `${status.workers.live} live, ${status.workers.active}/${status.workers.capacity} slots busy`
              : dash,
          ],
          ...(workers ?? []).map((w): [string, string] => [
            '',
            `${w.id}  ${w.active ?? 0}/${w.concurrency ?? '?'} active  heap ${w.heapPercent ?? '?'}%  rss ${w.rssMB ?? '?'}MB  seen ${formatAgo(w.lastSeenAt)}`,
          ]),
          ['Queue', `${status.queues.waiting} waiting, ${status.queues.active} active, ${status.queues.delayed} delayed (system: ${status.queues.system})`],
          ['DLQ', status.deadLetterQueueSize === 0 ? 'empty' : `${status.deadLetterQueueSize} failed runs (werkpilot dlq list)`],
          [
            'Agents',
            `${status.agents.total} total, ${status.agents.healthy} healthy, ${status.agents.degraded} degraded, ${status.agents.unhealthy} unhealthy, ` +
              `${status.agents.disabled} disabled, ${status.agents.openCircuits} open circuits`,
          ],
          ...status.unhealthy.map((u): [string, string] => ['Unhealthy', `${u.agent}: ${u.reasons.join('; ') || 'no reason given'}`]),
          ['Memory', `heap ${status.memory.heapPercent ?? '?'}%, rss ${status.memory.rssMB ?? '?'}MB (this scheduler)`],
        ];
        ctx.print(renderFields(fields));
      }),
    );
}
