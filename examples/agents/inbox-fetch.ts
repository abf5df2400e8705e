import { defineAgent } from '@werkpilot/shared/agent';
import { simulateWork } from './_simulate.ts';

/** Layer 0: fetches new mail from the shared inbox. */
export default defineAgent({
  name: 'inbox-fetch',
  schedule: { cron: '*/5 * * * * *' },
  priority: 2,
  timeoutMs: 10_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 50, 200);
    const messages = Math.floor(Math.random() * 15);
    ctx.log.info({ messages }, 'fetched messages');
    return { messages };
  },
});
