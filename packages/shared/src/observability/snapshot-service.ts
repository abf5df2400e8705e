import type { Logger } from 'pino';
import { ClusterSnapshotBuilder, type ClusterSnapshot, type ClusterSnapshotOptions } from './cluster-snapshot.js';
import { createProcessMetrics } from './process-metrics.js';

/**
 * Serves every metrics request from the latest cluster snapshot, and keeps it young.
 *
 * Bounded age: a request at time t gets a snapshot whose build started at t − maxAgeMs or later,
 * so it reflects every change made before t − maxAgeMs. With maxAgeMs = 0 it reflects every change
 * made before the request arrived (a build that started earlier does not count).
 * One build at a time: concurrent requests share the build in flight, or the one queued after it.
 * Kept warm: while requests keep coming, the next build starts before the current snapshot is too
 * old, so a dashboard polling every couple of seconds is served without waiting for a build.
 */
export interface SnapshotServiceOptions {
  builder: Pick<ClusterSnapshotBuilder, 'build'>;
  /** METRICS_SNAPSHOT_MAX_AGE_MS. */
  maxAgeMs: number;
  log: Logger;
  clock?: () => number;
}

/** Builds start again at this fraction of the maximum age while there is demand. */
const WARM_AT = 0.75;

interface Build {
  startedAt: number;
  /** Set when a change was made through this process after the build started. */
  isOutdated: boolean;
  promise: Promise<ClusterSnapshot>;
}

export class SnapshotService {
  private readonly options: SnapshotServiceOptions;
  private readonly clock: () => number;
  private latest: ClusterSnapshot | undefined;
  private inFlight: Build | undefined;
  private queued: Promise<ClusterSnapshot> | undefined;
  private latestIsOutdated = false;
  private lastDemandAt = -Infinity;
  private warmTimer: NodeJS.Timeout | undefined;
  private isClosed = false;

  constructor(options: SnapshotServiceOptions) {
    this.options = options;
    this.clock = options.clock ?? Date.now;
  }

  /** A snapshot within the bounded age; waits for a build only when the latest is too old. */
  async current(): Promise<ClusterSnapshot> {
    const now = this.clock();
    this.lastDemandAt = now;
    const { maxAgeMs } = this.options;
    const latest = this.latest;
    if (latest && !this.latestIsOutdated && maxAgeMs > 0 && latest.startedAt >= now - maxAgeMs) {
      this.keepWarm();
      return latest;
    }
    const building = this.inFlight;
    if (building && !building.isOutdated && maxAgeMs > 0 && building.startedAt >= now - maxAgeMs) return building.promise;
    return this.buildAfterInFlight();
  }

  /**
   * After a change made through this process (an operator action): the next request waits for a
   * build that started after it, so the one who made the change sees it at once.
   */
  invalidate(): void {
    this.latestIsOutdated = true;
    if (this.inFlight) this.inFlight.isOutdated = true;
  }

  /** Starts a build now (at boot), so the first request does not pay for reading every agent. */
  warmUp(): void {
    if (!this.inFlight) this.start().promise.catch(() => undefined);
  }

  async close(): Promise<void> {
    this.isClosed = true;
    clearTimeout(this.warmTimer);
    await this.inFlight?.promise.catch(() => undefined);
  }

  /** The build that starts once the one in flight (if any) is done; shared by every caller meanwhile. */
  private buildAfterInFlight(): Promise<ClusterSnapshot> {
    if (!this.inFlight) return this.start().promise;
    this.queued ??= this.inFlight.promise
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return (this.inFlight ?? this.start()).promise;
      });
    return this.queued;
  }

  private start(): Build {
    const build: Build = { startedAt: this.clock(), isOutdated: false, promise: undefined as unknown as Promise<ClusterSnapshot> };
    build.promise = this.options.builder.build().then(
      (snapshot) => {
        if (this.inFlight === build) this.inFlight = undefined;
        if (!this.latest || snapshot.startedAt >= this.latest.startedAt) {
          this.latest = snapshot;
          this.latestIsOutdated = build.isOutdated;
        }
        return snapshot;
      },
      (err: unknown) => {
        if (this.inFlight === build) this.inFlight = undefined;
        throw err;
      },
    );
    this.inFlight = build;
    return build;
  }

  /** While requests keep coming, rebuild before the latest snapshot reaches its maximum age. */
  private keepWarm(): void {
    const { maxAgeMs } = this.options;
    if (this.warmTimer || this.isClosed || !this.latest) return;
    const dueIn = Math.max(0, this.latest.startedAt + maxAgeMs * WARM_AT - this.clock());
    this.warmTimer = setTimeout(() => {
      this.warmTimer = undefined;
      const hasDemand = this.clock() - this.lastDemandAt < maxAgeMs;
      if (this.isClosed || !hasDemand || this.inFlight) return;
      this.start().promise.then(
        () => this.keepWarm(),
        (err: unknown) => this.options.log.warn({ err }, 'background snapshot build failed'),
      );
    }, dueIn);
    this.warmTimer.unref();
  }
}

/** The scheduler's snapshot service: a builder over the cluster plus this process's own metrics. */
export function createSnapshotService(options: ClusterSnapshotOptions & { maxAgeMs: number; log: Logger }): SnapshotService {
  const processMetrics = createProcessMetrics();
  const { maxAgeMs, log, ...builderOptions } = options;
  const builder = new ClusterSnapshotBuilder({ processMetrics: processMetrics.render, ...builderOptions });
  return new SnapshotService({ builder, maxAgeMs, log, ...(options.clock ? { clock: options.clock } : {}) });
}
