import { defineAgent } from '@werkpilot/shared';
import { demoFailRate, simulateWork } from './_simulate.js';

/**
 * Layer 1: classifies fetched mail. It is the demo's flaky agent: an attempt fails with
 * probability DEMO_FAIL_RATE (default 0.3), so retries and the dead-letter queue have something
 * to show. Set DEMO_FAIL_RATE=1 to watch its circuit breaker open.
 */
export default defineAgent({
  name: 'email-classifier',
  schedule: { cron: '*/10 * * * * *' },
  priority: 3,
  dependsOn: ['inbox-fetch'],
  timeoutMs: 10_000,
  retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 500 } },
  async run(ctx) {
    await simulateWork(ctx.signal, 60, 200);
    if (Math.random() < demoFailRate(0.3)) throw new Error('classifier model endpoint returned 503');
    const classified = Math.floor(Math.random() * 12);
    ctx.log.info({ classified }, 'classified messages');
    return { classified };
  },
});
