import { defineAgent } from '@werkpilot/shared';
import { simulateWork } from './_simulate.js';

/** Layer 3: compiles the report from everything upstream. */
export default defineAgent({
  name: 'daily-report',
  schedule: { cron: '*/30 * * * * *' },
  priority: 3,
  dependsOn: ['campaign-planner'],
  timeoutMs: 20_000,
  async run(ctx) {
    await simulateWork(ctx.signal, 200, 500);
    ctx.log.info('report compiled');
    return { pages: 3 };
  },
});
