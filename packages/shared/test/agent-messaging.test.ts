import { afterEach, describe, expect, it } from 'vitest';
import { EventBus, RpcClient, createLogger, startRpcResponder, triggerRun, type AgentDefinition, type BusEvent, type Keys, type Queues, type Registry } from '@werkpilot/shared';
import { createAgentCluster, useTestRedis, waitFor } from '@werkpilot/test-support';

const redis = useTestRedis();
const log = createLogger({ level: 'silent', name: 'test' });
const retention = { dlqRetain: 100, completedRetain: 1000 };

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

interface Setup {
  keys: Keys;
  registry: Registry;
  queues: Queues;
  /** The worker's bus (ctx.publish / ctx.subscribe go through it). */
  workerBus: EventBus;
  events: BusEvent[];
  run(agent: string): Promise<unknown>;
}

/** One worker process's worth of parts: agents worker with ctx.request wired, RPC responder, bus. */
async function setup(agents: Partial<AgentDefinition>[]): Promise<Setup> {
  const cluster = await createAgentCluster(redis, agents, { log });
  cleanups.push(() => cluster.close());
  const { keys, registry, queues, events } = cluster;
  let workerBus!: EventBus;
  await cluster.startWorker({
    id: 'w1',
    concurrency: 5,
    wire: (own) => {
      workerBus = new EventBus({ redis: own, keys, log });
      const rpc = new RpcClient({ redis: own, keys, log });
      const responder = startRpcResponder({ redis: own, keys, log, agents: registry.list(), workerId: 'w1' });
      return {
        bus: workerBus,
        request: (from, agent, payload, options) => rpc.request(agent, payload, { ...options, from }),
        cleanup: () => Promise.all([workerBus.close(), rpc.close(), responder.close()]),
      };
    },
  });
  return {
    keys,
    registry,
    queues,
    workerBus,
    events,
    async run(agent) {
      const { runId } = await triggerRun({ queue: queues.agents, registry, retention }, agent);
      const state = await waitFor(
        async () => {
          const s = await queues.agents.getJobState(runId);
          return s === 'completed' || s === 'failed' ? s : undefined;
        },
        { timeoutMs: 20_000, what: `run ${runId} of ${agent} to finish` },
      );
      const job = (await queues.agents.getJob(runId))!;
      if (state === 'failed') throw new Error(job.failedReason);
      return job.returnvalue;
    },
  };
}

describe('agents talking to each other', () => {
  it("lets a run ask another agent's onRequest with ctx.request", async () => {
    const { run } = await setup([
      { name: 'lead-scoring', onRequest: (payload) => ({ summary: 'scores fresh', asked: payload }) },
      { name: 'daily-report', run: async (ctx) => ({ leads: await ctx.request('lead-scoring', { what: 'summary' }) }) },
    ]);
    const result = (await run('daily-report')) as { result: unknown };
    expect(result.result).toEqual({ leads: { summary: 'scores fresh', asked: { what: 'summary' } } });
  });

  it('fails the run with the timeout error when the asked agent never answers', async () => {
    const { run } = await setup([{ name: 'mute' }, { name: 'asker', retry: { attempts: 1 }, run: async (ctx) => ctx.request('mute', {}, { timeoutMs: 100 }) }]);
    await expect(run('asker')).rejects.toThrow('request to agent mute timed out after 100 ms');
  });

  it('delivers ctx.publish topics to an external SUBSCRIBE on <prefix>:events', async () => {
    const { keys, run } = await setup([{ name: 'lead-scoring', run: async (ctx) => ctx.publish('leads:scored', { hot: 3 }) }]);
    const external = redis.client();
    const received: string[] = [];
    external.on('message', (_channel: string, message: string) => received.push(message));
    await external.subscribe(`${keys.prefix}:events`);
    await run('lead-scoring');
    await waitFor(() => received.some((m) => m.includes('leads:scored')));
    const event = JSON.parse(received.find((m) => m.includes('leads:scored'))!) as BusEvent;
    expect(event).toMatchObject({ type: 'leads:scored', agent: 'lead-scoring', data: { payload: { hot: 3 } } });
    expect(new Date(event.at).toISOString()).toBe(event.at);
  });

  it('gives ctx.subscribe handlers the topic payloads during the run and nothing after it', async () => {
    const heard: unknown[] = [];
    let release!: () => void;
    const done = new Promise<void>((r) => (release = r));
    const { run, workerBus, events } = await setup([
      {
        name: 'listener',
        run: async (ctx) => {
          await ctx.subscribe('leads:scored', (payload) => {
            heard.push(payload);
            if (heard.length === 2) release();
          });
          await ctx.publish('listener:ready');
          await done;
          return heard.length;
        },
      },
      {
        name: 'lead-scoring',
        run: async (ctx) => {
          await ctx.publish('leads:scored', { hot: 1 });
          return await ctx.publish('leads:scored', { hot: 2 });
        },
      },
    ]);
    const listening = run('listener');
    await waitFor(() => events.some((e) => e.type === 'listener:ready'));
    await run('lead-scoring');
    expect(await listening).toMatchObject({ result: 2 });
    expect(heard).toEqual([{ hot: 1 }, { hot: 2 }]);

    const handlers = () => (workerBus as unknown as { handlers: Set<unknown> }).handlers.size;
    await waitFor(() => handlers() === 0, { what: 'the run to release its subscription' });
    await run('lead-scoring');
    await waitFor(() => events.filter((e) => e.type === 'leads:scored').length === 4);
    expect(heard).toHaveLength(2);
  });
});
