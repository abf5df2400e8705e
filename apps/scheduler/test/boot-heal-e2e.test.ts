import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentSource, startAppCluster, uniquePrefix, useTestRedis, waitFor, writeAgentsDir, type AppCluster } from '@werkpilot/test-support';
import { runWerkpilot } from '../../cli/test/cli-harness.js';

const redis = useTestRedis();
const TOKEN = 'boot-heal-token';

/** A healthCheck that is healthy once `file` exists; `createOnFirstCall` makes it fail exactly once. */
function healthCheckOn(file: string, { createOnFirstCall }: { createOnFirstCall: boolean }): string {
  return `async healthCheck() {
    const fs = await import('node:fs');
    if (fs.existsSync(${JSON.stringify(file)})) return { healthy: true };
    ${createOnFirstCall ? `fs.writeFileSync(${JSON.stringify(file)}, 'seen');` : ''}
    return { healthy: false, reason: 'API unreachable' };
  },`;
}

// A scratch directory (removed after the file) for the files the healthChecks look at.
const scratch = writeAgentsDir({});
const crmMarker = path.join(scratch, 'crm-called-once');
const billingFixed = path.join(scratch, 'billing-fixed');
const agentsDir = writeAgentsDir({
  'crm-sync.ts': agentSource({ name: 'crm-sync' }, 'return { ok: true };', healthCheckOn(crmMarker, { createOnFirstCall: true })),
  'lead-scoring.ts': agentSource({ name: 'lead-scoring', dependsOn: ['crm-sync'] }, 'return { ok: true };'),
  'campaign-planner.ts': agentSource({ name: 'campaign-planner', dependsOn: ['lead-scoring'] }, 'return { ok: true };'),
  'billing.ts': agentSource({ name: 'billing' }, 'return { ok: true };', healthCheckOn(billingFixed, { createOnFirstCall: false })),
  'invoices.ts': agentSource({ name: 'invoices', dependsOn: ['billing'] }, 'return { ok: true };'),
});

const clusters: AppCluster[] = [];
afterAll(async () => {
  for (const c of clusters) await c.stop();
});

interface BootState {
  status: string;
  reason?: string;
  at: string;
  failedChecks?: number;
  nextCheckAt?: string;
  requestSeq?: number;
}

const authorised = { authorization: `Bearer ${TOKEN}` };
const getJson = async (url: string) => (await fetch(url, { headers: authorised })).json();

async function bootStates(url: string): Promise<Record<string, BootState>> {
  const body = (await getJson(`${url}/api/metrics`)) as { agents: Record<string, { boot: BootState | null }> };
  return Object.fromEntries(Object.entries(body.agents).flatMap(([agent, a]) => (a.boot ? [[agent, a.boot]] : [])));
}

async function leaderId(url: string): Promise<string> {
  const body = (await getJson(`${url}/api/metrics`)) as { system: { scheduler: { leaderId: string } } };
  return body.system.scheduler.leaderId;
}

async function start(recheckMs: number): Promise<AppCluster> {
  const cluster = await startAppCluster({
    REDIS_URL: redis.url,
    WERKPILOT_PREFIX: uniquePrefix(),
    WERKPILOT_AGENTS: agentsDir,
    DASHBOARD_TOKEN: TOKEN,
    BOOT_RECHECK_MS: String(recheckMs),
    // Every read of /api/metrics reflects every change before it: the test watches boot states
    // that last less than the default snapshot age (2 s).
    METRICS_SNAPSHOT_MAX_AGE_MS: '0',
    HEALTH_CHECK_TIMEOUT_MS: '2000',
  });
  clusters.push(cluster);
  return cluster;
}

describe('a failed boot heals', () => {
  it('re-checks an agent whose healthCheck failed once at boot and unblocks its dependents, without a leader change', async () => {
    const cluster = await start(500);
    const { url } = cluster;
    // The boot: crm-sync fails its check, its dependents are blocked with the root cause.
    const booted = await waitFor(
      async () => {
        const states = await bootStates(url);
        return states['crm-sync']?.status === 'failed' && states['campaign-planner']?.status === 'blocked' ? states : undefined;
      },
      { timeoutMs: 30_000, what: 'the boot with crm-sync failed' },
    );
    expect(booted['crm-sync']).toMatchObject({ reason: 'API unreachable', failedChecks: 1, nextCheckAt: expect.any(String) });
    expect(booted['lead-scoring']).toMatchObject({ status: 'blocked', reason: 'dependency crm-sync failed boot: API unreachable' });
    const leader = await leaderId(url);
    expect(existsSync(crmMarker)).toBe(true);

    // The re-check passes; the dependents are checked in the same round and unblock.
    const healed = await waitFor(
      async () => {
        const states = await bootStates(url);
        return ['crm-sync', 'lead-scoring', 'campaign-planner'].every((a) => states[a]?.status === 'ok') ? states : undefined;
      },
      { timeoutMs: 60_000, what: 'crm-sync and its dependents ok' },
    );
    const failedAt = Date.parse(booted['crm-sync']!.at);
    const passedAt = Date.parse(healed['crm-sync']!.at);
    const unblockedAt = Date.parse(healed['campaign-planner']!.at);
    console.log(`[measure] boot re-check: crm-sync failed → passed in ${passedAt - failedAt} ms (BOOT_RECHECK_MS 500); its dependents unblocked ${unblockedAt - passedAt} ms later`);
    expect(healed['crm-sync']!.failedChecks).toBeUndefined();
    expect(await leaderId(url)).toBe(leader);

    // A run of the deepest dependent now runs instead of being skipped for its dependency.
    const res = await fetch(`${url}/api/agents/campaign-planner/run`, { method: 'POST', headers: { ...authorised, 'content-type': 'application/json' }, body: '{}' });
    const { runId } = (await res.json()) as { runId: string };
    const run = await waitFor(
      async () => {
        const view = (await getJson(`${url}/api/runs/${runId}`)) as { state: string; result?: { outcome: string } };
        return view.state === 'completed' ? view : undefined;
      },
      { what: 'the campaign-planner run' },
    );
    expect(run.result?.outcome).toBe('success');
  }, 90_000);

  it('re-checks an agent on demand (werkpilot boot): a failure says why and exits 1; once fixed, exit 0 and its dependent unblocks', async () => {
    // Backoff of 10 min: only the operator's request can re-check within this test.
    const cluster = await start(600_000);
    const { url } = cluster;
    const env = { WERKPILOT_URL: url, WERKPILOT_TOKEN: TOKEN };
    await waitFor(async () => (await bootStates(url)).invoices?.status === 'blocked', { timeoutMs: 30_000, what: 'invoices blocked by billing' });
    const leader = await leaderId(url);

    const stillBroken = await runWerkpilot(['boot', 'billing'], env);
    expect(stillBroken).toMatchObject({ code: 1, stdout: 'billing: boot failed: API unreachable\n' });
    expect(stillBroken.stderr).toBe('error: billing did not pass its boot check: failed (API unreachable)\n');
    expect((await bootStates(url)).billing).toMatchObject({ status: 'failed', failedChecks: 2 });

    writeFileSync(billingFixed, 'fixed');
    const startedAt = Date.now();
    const fixed = await runWerkpilot(['boot', 'billing', '--json'], env);
    const ms = Date.now() - startedAt;
    expect(fixed.code).toBe(0);
    expect(JSON.parse(fixed.stdout)).toMatchObject({ agent: 'billing', boot: { status: 'ok', requestSeq: 2 } });
    const states = await bootStates(url);
    expect(states.invoices).toMatchObject({ status: 'ok' });
    console.log(`[measure] werkpilot boot billing: answered ok in ${ms} ms, its dependent unblocked in the same round`);
    expect(await leaderId(url)).toBe(leader);

    // An unknown agent is a 404 through the CLI: exit 1, one line.
    const unknown = await runWerkpilot(['boot', 'no-such-agent'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^error: .*unknown agent no-such-agent/);
  }, 90_000);
});
