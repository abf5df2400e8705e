import { UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import type { HealthCheckResult } from '../agents/agent.js';
import { runInScope } from '../process/process-faults.js';
import type { Registry } from '../agents/registry.js';
import { MAX_ERROR_MESSAGE_BYTES, truncateBytes } from '../run/size-limits.js';
import type { SystemJobHandler } from '../queues/system-worker.js';

/** The `system` queue job by which the health monitor runs an agent's healthCheck on a worker. */
export const HEALTH_CHECK_JOB = 'health-check';
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 10_000;

/**
 * The worker side of a health check: runs the agent's `healthCheck` with an AbortSignal that fires
 * after the job's `timeoutMs`. A throw or a timeout answers unhealthy (never a failed job), so the
 * monitor hears the reason.
 */
export function createHealthCheckHandler({ registry, log }: { registry: Registry; log: Logger }): SystemJobHandler {
  return async (job, bullSignal) => {
    const { agent, timeoutMs = DEFAULT_HEALTH_CHECK_TIMEOUT_MS } = job.data as { agent: string; timeoutMs?: number };
    const spec = registry.get(agent);
    if (!spec) throw new UnrecoverableError(`unknown agent ${agent}`);
    const check = spec.definition.healthCheck;
    if (!check) return { healthy: true };
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = bullSignal ? AbortSignal.any([timeout, bullSignal]) : timeout;
    const scoped = log.child({ agent, component: 'health-check' });
    try {
      const result = await new Promise<HealthCheckResult>((resolve, reject) => {
        signal.addEventListener('abort', () => reject(new Error(`timed out after ${timeoutMs} ms`)), { once: true });
        Promise.resolve()
          .then(() => runInScope({ agent, activity: 'health-check' }, () => check({ signal, log: scoped })))
          .then(resolve, reject);
      });
      return { healthy: result?.healthy === true, ...(result?.reason ? { reason: truncateBytes(String(result.reason), MAX_ERROR_MESSAGE_BYTES) } : {}) };
    } catch (err) {
      const message = truncateBytes((err as Error)?.message ?? String(err), MAX_ERROR_MESSAGE_BYTES);
      return { healthy: false, reason: signal.aborted ? message : `threw: ${message}` };
    }
  };
}
