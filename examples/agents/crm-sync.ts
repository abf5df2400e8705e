import { defineAgent } from '@werkpilot/shared/agent';
import { simulateWork } from './_simulate.ts';

/** Layer 0: pulls changed contacts from the CRM. */
export default defineAgent({
  name: 'crm-sync',
  schedule: { cron: '*/5 * * * * *' },
  priority: 1,
  timeoutMs: 10_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 80, 250);
    const contacts = 20 + Math.floor(Math.random() * 30);
    ctx.log.info({ contacts }, 'synced contacts');
    await ctx.publish('crm:synced', { contacts });
    return { contacts };
  },
  healthCheck: () => ({ healthy: true }),
});
