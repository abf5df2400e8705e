import { defineAgent } from '@werkpilot/shared/agent';
import { simulateWork } from './_simulate.ts';

/** Layer 3: compiles the report from everything upstream. */
export default defineAgent({
  name: 'daily-report',
  schedule: { cron: '*/30 * * * * *' },
  priority: 3,
  dependsOn: ['campaign-planner'],
  timeoutMs: 20_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 200, 500);
    // Agent-to-agent request: whichever worker hosts lead-scoring answers (see lead-scoring's onRequest).
    const leads = await ctx.request('lead-scoring', { want: 'summary' }, { timeoutMs: 2000 }).catch((err: Error) => {
      ctx.log.warn({ err: err.message }, 'lead summary unavailable; reporting without it');
      return null;
    });
    ctx.log.info({ leads }, 'report compiled');
    return { pages: 3, leads };
  },
});
