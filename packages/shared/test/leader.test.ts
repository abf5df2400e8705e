import { afterEach, describe, expect, it } from 'vitest';
import { LeaderElection, createKeys, createLogger, leaderKey, type Keys } from '@werkpilot/shared';
import { sleep, uniquePrefix, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/**
 * Leases a loaded machine keeps: renewals every 100 ms against a ttl of seconds, so an event loop
 * that stalls for a second loses nothing. What is proven is the order of events (renewed past its
 * first expiry; taken over before the old lease could have expired), not how fast.
 */
const TTL_MS = 2000;
const RENEW_MS = 100;

function replica(keys: Keys, id: string, ttlMs = TTL_MS) {
  const calls: string[] = [];
  const election = new LeaderElection({
    redis: redis.client(),
    keys,
    log,
    id,
    ttlMs,
    renewIntervalMs: RENEW_MS,
  });
  cleanups.push(() => election.stop());
  const start = () => election.start({ onElected: () => void calls.push('elected'), onDeposed: () => void calls.push('deposed') });
  return { election, calls, start };
}

describe('leader election', () => {
  it('elects exactly one of several replicas and keeps it while it renews', async () => {
    const keys = createKeys(uniquePrefix());
    const replicas = ['a', 'b', 'c'].map((id) => replica(keys, id));
    await Promise.all(replicas.map((r) => r.start()));
    const leaders = replicas.filter((r) => r.election.isLeader);
    expect(leaders).toHaveLength(1);
    const leader = leaders[0]!;
    expect(await leader.election.confirm()).toBe(true);
    // Two ttls later it still leads: only renewals can have kept the lease that long.
    const client = redis.client();
    const firstExpiry = Date.now() + (await client.pttl(leaderKey(keys)));
    await sleep(firstExpiry + TTL_MS - Date.now());
    expect(replicas.filter((r) => r.election.isLeader).map((r) => r.election.id)).toEqual([leader.election.id]);
    expect(await client.get(leaderKey(keys))).toBe(leader.election.id);
    expect(leader.calls).toEqual(['elected']);
  });

  it('hands over at once when the leader releases the lease on shutdown', async () => {
    const keys = createKeys(uniquePrefix());
    // A lease far longer than the wait: b can only lead because a released it, not because it expired.
    const a = replica(keys, 'a', 60_000);
    const b = replica(keys, 'b', 60_000);
    await a.start();
    await b.start();
    expect(a.election.isLeader).toBe(true);
    await a.election.stop();
    expect(a.calls).toEqual(['elected', 'deposed']);
    await waitFor(() => b.election.isLeader, { timeoutMs: 10_000, what: 'b to take the released lease' });
    expect(b.calls).toEqual(['elected']);
  });

  it('steps down without acting when it finds another replica holding the lease (a paused leader coming back)', async () => {
    const keys = createKeys(uniquePrefix());
    const a = replica(keys, 'a', 60_000);
    await a.start();
    expect(a.election.isLeader).toBe(true);
    // While "a" was paused its lease expired and "b" took it.
    const client = redis.client();
    await client.set(leaderKey(keys), 'b', 'PX', 60_000);
    expect(await a.election.confirm()).toBe(false);
    expect(a.election.isLeader).toBe(false);
    expect(a.calls).toEqual(['elected', 'deposed']);
    // Its shutdown does not delete someone else's lease.
    await a.election.stop();
    expect(await client.get(leaderKey(keys))).toBe('b');
  });
});
