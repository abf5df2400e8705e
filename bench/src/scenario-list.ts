import type { Scenario } from './scenario.js';
import { addedLatency } from './scenarios/added-latency.js';
import { cluster } from './scenarios/cluster.js';
import { controls } from './scenarios/controls.js';
import { cronLateness } from './scenarios/cron-lateness.js';
import { dependencyPromotion } from './scenarios/dependency-promotion.js';
import { redisCommands } from './scenarios/redis-commands.js';
import { registryScale } from './scenarios/registry-scale.js';
import { rpcRoundTrip } from './scenarios/rpc-round-trip.js';
import { sseFlood } from './scenarios/sse-flood.js';
import { throughput } from './scenarios/throughput.js';
import { tracingOverhead } from './scenarios/tracing-overhead.js';

/** Every scenario, in the order they run and print. */
export const SCENARIOS: readonly Scenario[] = [
  throughput,
  tracingOverhead,
  addedLatency,
  cronLateness,
  dependencyPromotion,
  rpcRoundTrip,
  registryScale,
  redisCommands,
  controls,
  sseFlood,
  cluster,
];
