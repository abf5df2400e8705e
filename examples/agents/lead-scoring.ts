import { defineAgent } from '@werkpilot/shared/agent';
import { simulateWork } from './_simulate.ts';

/** The latest scoring this worker process did, for requests from other agents. */
let latest: { hotLeads: number; scoredAt: string } | undefined;

/** Layer 1: scores leads from the freshly synced CRM contacts; answers summary requests. */
export default defineAgent({
  name: 'lead-scoring',
  schedule: { cron: '*/10 * * * * *' },
  priority: 2,
  dependsOn: ['crm-sync'],
  timeoutMs: 10_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 100, 300);
    const hotLeads = Math.floor(Math.random() * 8);
    ctx.log.info({ hotLeads }, 'scored leads');
    latest = { hotLeads, scoredAt: new Date().toISOString() };
    await ctx.publish('leads:scored', latest);
    return { hotLeads };
  },
  onRequest: () => ({ summary: latest ? `${latest.hotLeads} hot leads` : 'no scoring on this worker yet', ...latest }),
});
