import { defineAgent } from '@werkpilot/shared';
import { demoFailRate, simulateWork } from './_simulate.js';

/** Runs whose batch holds a message the classifier cannot parse: every attempt of them fails. */
const poisonedRuns = new Set<string>();
let runsSeen = 0;

/**
 * Layer 1: classifies fetched mail. It is the demo's flaky agent, so retries and the dead-letter
 * queue have something to show: every 4th batch (the first one included) holds a poison message
 * that fails all attempts and lands in the DLQ, and any attempt fails with probability
 * DEMO_FAIL_RATE (default 0.1). Set DEMO_FAIL_RATE=1 to watch its circuit breaker open.
 */
export default defineAgent({
  name: 'email-classifier',
  schedule: { cron: '*/5 * * * * *' },
  priority: 3,
  dependsOn: ['inbox-fetch'],
  timeoutMs: 10_000,
  retry: { attempts: 2, backoff: { type: 'exponential', delayMs: 500 } },
  // Low for the demo: with DEMO_FAIL_RATE=1 (two failed attempts per tick) the circuit opens
  // within a minute, and its dependent campaign-planner is skipped while it is open.
  maxRestartsPerHour: 10,
  async run(ctx) {
    if (ctx.attempt === 1 && runsSeen++ % 4 === 0) poisonedRuns.add(ctx.runId);
    await simulateWork(ctx.signal, 60, 200);
    if (poisonedRuns.has(ctx.runId)) throw new Error('message 4711 has an unparseable MIME body');
    if (Math.random() < demoFailRate(0.1)) throw new Error('classifier model endpoint returned 503');
    const classified = Math.floor(Math.random() * 12);
    ctx.log.info({ classified }, 'classified messages');
    return { classified };
  },
});
