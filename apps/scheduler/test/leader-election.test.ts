import { afterAll, describe, expect, it } from 'vitest';
import { createKeys, createQueues, leaderKey, freePort } from '@werkpilot/shared';
import { agentSource, startApp, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppProcess } from '@werkpilot/test-support';

const redis = useTestRedis();
/** Short lease for the pause test; the failover test uses the default (10 s) to check the ≤ 15 s promise. */
const SHORT_LEASE_MS = 3000;
const DEFAULT_LEASE_MS = 10_000;

const agentsDir = writeAgentsDir({
  'crm-sync.ts': agentSource({ name: 'crm-sync', schedule: { cron: '0 * * * *' } }),
  'lead-scoring.ts': agentSource({ name: 'lead-scoring', schedule: { cron: '30 * * * *' }, dependsOn: ['crm-sync'] }),
});

interface Replica {
  app: AppProcess;
  port: number;
}

async function startSchedulers(prefix: string, count: number, leaseMs?: number): Promise<Replica[]> {
  const replicas: Replica[] = [];
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    const app = startApp('scheduler', {
      REDIS_URL: redis.url,
      WERKPILOT_PREFIX: prefix,
      WERKPILOT_AGENTS: agentsDir,
      PORT: String(port),
      ...(leaseMs ? { LEADER_LEASE_MS: String(leaseMs) } : {}),
      HEALTH_INTERVAL_MS: '300',
      HEALTH_CHECK_TIMEOUT_MS: '200',
    });
    replicas.push({ app, port });
  }
  await Promise.all(replicas.map((r) => r.app.waitForLog(/dashboard on/, 30_000)));
  return replicas;
}

/**
 * The replica's view of the election, from /api/metrics. A loaded machine may make a replica answer
 * 503 for a moment (its Redis probe did not answer in time); that is asked again, and a wait that
 * runs out says what the replica answered.
 */
async function schedulerStatus(port: number): Promise<{ isLeader: boolean; leaderId: string | null; replicaId: string }> {
  let last = '';
  const body = await waitFor(
    async () => {
      const res = await fetch(`http://127.0.0.1:${port}/api/metrics`, { signal: AbortSignal.timeout(5000) });
      const text = await res.text();
      last = `${res.status} ${text.slice(0, 300)}`;
      return res.ok ? (JSON.parse(text) as { system: { scheduler: { isLeader: boolean; leaderId: string | null; replicaId: string } } }) : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 200, what: () => `GET /api/metrics on port ${port} to answer 200; last answer: ${last}` },
  );
  return body.system.scheduler;
}

/** The pid in a replica id (`host:pid:random`). */
const pidOf = (replicaId: string) => Number(replicaId.split(':').at(-2));

async function currentLeader(prefix: string): Promise<string | null> {
  return redis.client().get(leaderKey(createKeys(prefix)));
}

async function jobSchedulerIds(prefix: string): Promise<string[]> {
  const queues = createQueues({ connection: redis.client(), keys: createKeys(prefix) });
  try {
    const ids = [...(await queues.agents.getJobSchedulers(0, -1)), ...(await queues.system.getJobSchedulers(0, -1))].map((s) => s.key);
    return ids.sort();
  } finally {
    await queues.close();
  }
}

const started: Replica[] = [];
afterAll(() => {
  for (const r of started) {
    try {
      r.app.proc.kill('SIGCONT');
      r.app.proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

describe('scheduler leader election (real processes)', () => {
  it('elects one leader of three; after kill -9 another leads within the lease, with no duplicate job schedulers', async () => {
    const prefix = uniquePrefix();
    const replicas = await startSchedulers(prefix, 3);
    started.push(...replicas);

    const leaderId = await waitFor(() => currentLeader(prefix), { timeoutMs: 10_000, what: 'a leader' });
    // /api/metrics is a snapshot up to METRICS_SNAPSHOT_MAX_AGE_MS old: a replica may still show the moment before the election.
    const statuses = await waitFor(
      async () => {
        const all = await Promise.all(replicas.map((r) => schedulerStatus(r.port)));
        return all.every((s) => s.leaderId === leaderId) ? all : undefined;
      },
      { what: 'every replica to name the leader' },
    );
    expect(statuses.filter((s) => s.isLeader).map((s) => s.replicaId)).toEqual([leaderId]);
    await waitFor(async () => (await jobSchedulerIds(prefix)).length === 3, { what: 'job schedulers reconciled by the leader' });
    expect(await jobSchedulerIds(prefix)).toEqual(['crm-sync', 'lead-scoring', 'nightly']);
    // Only the leader plans: followers never reconcile nor run the health monitor.
    const leader = replicas.find((r) => r.app.proc.pid === pidOf(leaderId))!;
    for (const r of replicas.filter((x) => x !== leader)) {
      expect(r.app.output()).not.toMatch(/job schedulers reconciled|health round/);
    }
    await leader.app.waitForLog(/health round/);

    const killedAt = Date.now();
    leader.app.kill('SIGKILL');
    expect(await leader.app.exited).toBe('SIGKILL');
    const newLeaderId = await waitFor(
      async () => {
        const id = await currentLeader(prefix);
        return id && id !== leaderId ? id : null;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: 'a new leader' },
    );
    const failoverMs = Date.now() - killedAt;
    console.log(`leader failover after kill -9: ${failoverMs} ms (default lease ${DEFAULT_LEASE_MS} ms)`);
    // The lease expires at most its ttl after the last renewal; a follower tries every second.
    expect(failoverMs).toBeLessThanOrEqual(15_000);

    const survivor = replicas.find((r) => r.app.proc.pid === pidOf(newLeaderId))!;
    await waitFor(async () => (await schedulerStatus(survivor.port)).isLeader, { what: 'the new leader to say so' });
    await survivor.app.waitForLog(/job schedulers reconciled/);
    expect(await jobSchedulerIds(prefix)).toEqual(['crm-sync', 'lead-scoring', 'nightly']);
    const others = replicas.filter((r) => r !== leader && r !== survivor);
    expect(await Promise.all(others.map(async (r) => (await schedulerStatus(r.port)).isLeader))).toEqual([false]);
  }, 60_000);

  it('a paused leader that comes back after losing the lease steps down and does not act', async () => {
    const prefix = uniquePrefix();
    const replicas = await startSchedulers(prefix, 2, SHORT_LEASE_MS);
    started.push(...replicas);
    const leaderId = await waitFor(() => currentLeader(prefix), { timeoutMs: 10_000, what: 'a leader' });
    const paused = replicas.find((r) => r.app.proc.pid === pidOf(leaderId))!;
    const other = replicas.find((r) => r !== paused)!;
    await paused.app.waitForLog(/health round/);

    paused.app.kill('SIGSTOP');
    await waitFor(
      async () => {
        const id = await currentLeader(prefix);
        return id && id !== leaderId;
      },
      { timeoutMs: 20_000, what: 'the other replica to take over' },
    );
    await other.app.waitForLog(/health round/);

    const outputBeforeResume = paused.app.output().length;
    const leaderOutputBeforeResume = other.app.output().length;
    paused.app.kill('SIGCONT');
    await paused.app.waitForLog(/no longer leader/);
    await waitFor(async () => (await schedulerStatus(paused.port)).isLeader === false, { what: 'the resumed replica to report it is not leader' });
    // Its resumed timers have had three health rounds' time to misbehave: as long as the leader took for three.
    await waitFor(
      () =>
        (
          other.app
            .output()
            .slice(leaderOutputBeforeResume)
            .match(/health round/g) ?? []
        ).length >= 3,
      {
        timeoutMs: 20_000,
        what: 'three health rounds of the new leader after the resume',
      },
    );
    const afterResume = paused.app.output().slice(outputBeforeResume);
    expect(afterResume).not.toMatch(/health round|job schedulers reconciled|elected leader/);
    expect(await currentLeader(prefix)).not.toBe(leaderId);
    expect((await schedulerStatus(other.port)).isLeader).toBe(true);
    expect(await jobSchedulerIds(prefix)).toEqual(['crm-sync', 'lead-scoring', 'nightly']);
  }, 60_000);
});
