import { defineAgent } from '@werkpilot/shared/agent';
import { demoFailRate, simulateWork } from './_simulate.ts';

/** One run in this many (chosen by its id, so every worker retrying it agrees) holds a message the classifier cannot parse. */
export const POISON_EVERY = 120;
/** Every this many runs, the model endpoint fails the first attempt; the retry succeeds. */
export const FLAKY_EVERY = 45;
const ATTEMPTS = 2;

/** The first run this process sees holds the poison message too, so a fresh `pnpm start` shows a DLQ entry at once. */
const poisonedRuns = new Set<string>();
/** Runs whose first attempt fails. */
const flakyRuns = new Set<string>();
let runsSeen = 0;

/**
 * Whether a run's batch is poisoned: a pure function of the run id, so every worker that retries it
 * agrees. A cron run's id ends in its tick (`repeat:email-classifier:<ms>`), which makes it exactly
 * one tick in POISON_EVERY; any other id (a manual run) is hashed.
 */
function isPoisoned(runId: string): boolean {
  const tickMs = /:(\d+)$/.exec(runId)?.[1];
  let n = tickMs ? Math.floor(Number(tickMs) / 5000) : 2166136261;
  if (!tickMs) for (const char of runId) n = Math.imul(n ^ char.charCodeAt(0), 16777619) >>> 0;
  return n % POISON_EVERY === 0 || poisonedRuns.has(runId);
}

/**
 * Layer 1: classifies fetched mail. It is the demo's flaky agent, so the dead-letter queue and
 * retries have something to show without looking broken: the first batch a worker sees and then
 * one run in POISON_EVERY (about every 10 minutes at one run per 5 s) holds a poison message that
 * fails both attempts and lands in the DLQ (the first one only if its retry comes back to the same
 * worker); one run in FLAKY_EVERY fails its first attempt and succeeds on the retry. That is 28-30
 * failed attempts an hour, under the circuit's limit of 40, so the circuit stays closed.
 * DEMO_FAIL_RATE (0–1, default 0) makes any attempt fail with that probability: DEMO_FAIL_RATE=1
 * fails all of them (24 a minute) and opens the circuit within two minutes, and its dependent
 * campaign-planner is skipped while it is open.
 */
export default defineAgent({
  name: 'email-classifier',
  schedule: { cron: '*/5 * * * * *' },
  priority: 3,
  dependsOn: ['inbox-fetch'],
  timeoutMs: 10_000,
  retry: { attempts: ATTEMPTS, backoff: { type: 'exponential', delayMs: 500 } },
  maxRestartsPerHour: 40,
  async run(ctx) {
    if (ctx.attempt === 1) {
      const seen = runsSeen++;
      if (seen === 0) poisonedRuns.add(ctx.runId);
      else if (seen % FLAKY_EVERY === FLAKY_EVERY - 1) flakyRuns.add(ctx.runId);
    }
    const isLastAttempt = ctx.attempt >= ATTEMPTS;
    await simulateWork(ctx.signal, 60, 200);
    if (isPoisoned(ctx.runId)) {
      if (isLastAttempt) poisonedRuns.delete(ctx.runId);
      throw new Error('message 4711 has an unparseable MIME body');
    }
    if (flakyRuns.delete(ctx.runId)) throw new Error('classifier model endpoint returned 503');
    if (Math.random() < demoFailRate(0)) throw new Error('classifier model endpoint returned 503');
    const classified = Math.floor(Math.random() * 12);
    ctx.log.info({ classified }, 'classified messages');
    return { classified };
  },
});
