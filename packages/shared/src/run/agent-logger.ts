import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { AgentLogger } from '../agents/agent.js';

/** Lines of an agent's own logging copied into one run's job log (Bull Board shows them). */
export const JOB_LOG_LINES_PER_RUN = 200;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

/**
 * The logger an agent sees during a run: every line goes to the process log (pino, with the run's
 * bindings) and, when its level is enabled, to the run's job log, capped per run so a chatty agent
 * cannot grow Redis without bound. Job-log writes are fire-and-forget: logging never fails a run.
 */
export function createRunLogger(base: Logger, job: Pick<Job, 'log'>, onWriteError: (err: unknown) => void): AgentLogger {
  let written = 0;
  const logger = {} as AgentLogger;
  for (const level of LEVELS) {
    logger[level] = ((...args: unknown[]) => {
      (base[level] as (...a: unknown[]) => void)(...args);
      if (!base.isLevelEnabled(level) || written > JOB_LOG_LINES_PER_RUN) return;
      written += 1;
      const line = written > JOB_LOG_LINES_PER_RUN ? `job log capped at ${JOB_LOG_LINES_PER_RUN} lines; see the process log` : formatLine(level, args);
      job.log(line).catch(onWriteError);
    }) as AgentLogger[typeof level];
  }
  return logger;
}

function formatLine(level: string, args: unknown[]): string {
  const [first, ...rest] = args;
  const parts: string[] = [level.toUpperCase()];
  if (typeof first === 'string') parts.push(first, ...rest.map(String));
  else {
    const message = rest.filter((r) => typeof r === 'string').join(' ');
    if (message) parts.push(message);
    if (first instanceof Error) parts.push(first.message);
    else if (first !== undefined) parts.push(safeJson(first));
  }
  return parts.join(' ');
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
