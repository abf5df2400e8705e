import { describe, expect, it } from 'vitest';
import type { Job } from 'bullmq';
import {
  DeadLetterQueue,
  createRunGate,
  dependencyRule,
  disableAgent,
  enableAgent,
  isEnabled,
  skipReason,
  triggerRun,
  type AgentSpec,
  type GateView,
  type RunJobData,
} from '@werkpilot/shared';
import { useTestRedis, waitFor } from '@werkpilot/test-support';
import { dependencyCluster, retention, type DependencyCluster } from './_dependency-cluster.js';

const redis = useTestRedis();

/** Triggers a manual run and waits until its job has completed; returns its result. */
async function runToCompletion(c: DependencyCluster, agent: string): Promise<{ outcome: string; reasons?: string[] }> {
  const { runId } = await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, agent);
  const job = await waitFor(
    async () => {
      const j = await c.queues.agents.getJob(runId);
      return j && (await j.isCompleted()) ? j : undefined;
    },
    { what: `${agent}'s run to complete` },
  );
  return job.returnvalue as { outcome: string; reasons?: string[] };
}

describe('dependency health gating', () => {
  it('skips a disabled agent\'s own runs with reason "disabled", as a skip and not a failure', async () => {
    let ran = 0;
    const c = await dependencyCluster(redis, [{ name: 'crm-sync', run: async () => void ran++ }]);
    await c.startWorker();
    await disableAgent({ redis: c.redis, keys: c.keys }, 'crm-sync');
    expect(await isEnabled({ redis: c.redis, keys: c.keys }, 'crm-sync')).toBe(false);

    expect(await runToCompletion(c, 'crm-sync')).toMatchObject({ outcome: 'skipped', reasons: ['disabled'] });
    expect(ran).toBe(0);
    expect(await c.state.get('crm-sync')).toMatchObject({ skipped: 1, failures: 0, runs: 0, consecutiveFailures: 0 });
    expect(await new DeadLetterQueue(c.queues.agents).size()).toBe(0);
    await waitFor(() => c.events.some((e) => e.type === 'agent:skipped' && e.agent === 'crm-sync'), { what: 'agent:skipped' });
    expect(c.events.some((e) => e.type === 'agent:retrying' || e.type === 'agent:failed' || e.type === 'dependency:unhealthy')).toBe(false);

    await enableAgent({ redis: c.redis, keys: c.keys }, 'crm-sync');
    expect(await runToCompletion(c, 'crm-sync')).toMatchObject({ outcome: 'success' });
    expect(ran).toBe(1);
  });

  it('skips a dependent of a disabled agent with "dependency X disabled" and publishes dependency:unhealthy', async () => {
    let ran = 0;
    const c = await dependencyCluster(redis, [{ name: 'crm-sync' }, { name: 'lead-scorer', dependsOn: ['crm-sync'], run: async () => void ran++ }]);
    await c.startWorker();
    await disableAgent({ redis: c.redis, keys: c.keys }, 'crm-sync');

    expect(await runToCompletion(c, 'lead-scorer')).toMatchObject({ outcome: 'skipped', reasons: ['dependency crm-sync disabled'] });
    expect(ran).toBe(0);
    await waitFor(() => c.events.some((e) => e.type === 'dependency:unhealthy'), { what: 'dependency:unhealthy' });
    const unhealthy = c.events.find((e) => e.type === 'dependency:unhealthy')!;
    expect(unhealthy).toMatchObject({ agent: 'lead-scorer', data: { reasons: ['dependency crm-sync disabled'] } });
    expect(await c.state.get('lead-scorer')).toMatchObject({ skipped: 1, failures: 0 });
  });

  it("skips a dependent whose dependency's last run is in the DLQ, until that run leaves the DLQ", async () => {
    let ran = 0;
    const c = await dependencyCluster(redis, [
      {
        name: 'crm-sync',
        retry: { attempts: 1 },
        run: async () => {
          throw new Error('token expired');
        },
      },
      { name: 'lead-scorer', dependsOn: ['crm-sync'], run: async () => void ran++ },
    ]);
    await c.startWorker();
    await triggerRun({ queue: c.queues.agents, registry: c.registry, retention }, 'crm-sync');
    const dlq = new DeadLetterQueue(c.queues.agents);
    await waitFor(async () => (await dlq.size()) === 1, { what: 'crm-sync in the DLQ' });

    expect(await runToCompletion(c, 'lead-scorer')).toMatchObject({
      outcome: 'skipped',
      reasons: ['dependency crm-sync last run dead-lettered: token expired'],
    });
    expect(ran).toBe(0);

    await dlq.purge();
    expect(await runToCompletion(c, 'lead-scorer')).toMatchObject({ outcome: 'success' });
    expect(ran).toBe(1);
  });

  it('evaluates every rule of the list and reports all reasons, in rule order, once each', async () => {
    const gate = createRunGate({
      rules: [() => skipReason('disabled'), dependencyRule((dep) => (dep === 'b' ? 'unhealthy: circuit open' : null)), () => [skipReason('disabled'), skipReason('overlap')], () => null],
    });
    const spec = { name: 'x', dependsOn: ['a', 'b'] } as AgentSpec;
    expect(gate({ spec, job: {} as Job<RunJobData>, view: {} as GateView })).toEqual([
      { text: 'disabled' },
      { text: 'dependency b unhealthy: circuit open', dependency: 'b' },
      { text: 'overlap' },
    ]);
  });
});
