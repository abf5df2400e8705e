import { defineAgent } from '@werkpilot/shared/agent';
import { simulateWork } from './_simulate.ts';

/** Layer 2: plans outreach from scored leads and classified mail. */
export default defineAgent({
  name: 'campaign-planner',
  schedule: { cron: '*/15 * * * * *' },
  priority: 3,
  dependsOn: ['lead-scoring', 'email-classifier'],
  timeoutMs: 15_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 150, 400);
    const campaigns = 1 + Math.floor(Math.random() * 3);
    ctx.log.info({ campaigns }, 'planned campaigns');
    return { campaigns };
  },
});
