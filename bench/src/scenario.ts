import type { BenchRedis } from './bench-redis.js';
import type { Measurement } from './measurement.js';

export interface ScenarioContext {
  /** `--quick`: fewer samples, so the whole suite runs in under a minute. */
  quick: boolean;
  /** This scenario's own Redis (fresh, or REDIS_URL isolated by prefix). */
  redis: BenchRedis;
  /** Progress lines (stderr), so stdout stays the table. */
  progress(message: string): void;
}

/** One benchmark: measures ours beside the raw baseline on the same Redis and returns rows. */
export interface Scenario {
  /** Short id used in the table, the JSON and `--only`. */
  name: string;
  /** What it measures, one line (the README explains more). */
  title: string;
  run(ctx: ScenarioContext): Promise<Measurement[]>;
}

/**
 * Thrown by a scenario that cannot run on this machine (a program missing, a feature the local
 * Redis lacks): `pnpm bench` lists it as skipped with this one-line reason and does not fail.
 */
export class ScenarioSkippedError extends Error {
  override name = 'ScenarioSkippedError';
}
