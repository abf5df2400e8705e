import { defineAgent } from '@werkpilot/shared';
import { simulateWork } from './_simulate.js';

/** Layer 1: scores leads from the freshly synced CRM contacts. */
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
    return { hotLeads };
  },
  onRequest: () => ({ summary: 'lead scores are fresh', at: new Date().toISOString() }),
});
