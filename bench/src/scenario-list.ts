import type { Scenario } from './scenario.js';
import { addedLatency } from './scenarios/added-latency.js';
import { cronLateness } from './scenarios/cron-lateness.js';
import { redisCommands } from './scenarios/redis-commands.js';
import { registryScale } from './scenarios/registry-scale.js';
import { throughput } from './scenarios/throughput.js';

/** Every scenario, in the order they run and print. */
export const SCENARIOS: readonly Scenario[] = [throughput, addedLatency, cronLateness, registryScale, redisCommands];
