import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';
import { LOG_REDACTION } from '../observability/redaction.js';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  /** Component name, e.g. `scheduler` or `worker`. */
  name: string;
  /** Pretty-print (pino-pretty). Defaults to whether stdout is a terminal. */
  pretty?: boolean;
}

/**
 * A pino logger: JSON lines for machines, pretty lines on a terminal. Parts of the system take
 * a logger as a parameter and scope it with `log.child({ component })`.
 *
 * Secrets never reach a line: URL passwords are masked and tokens, passwords and Authorization
 * headers replaced (redaction.ts).
 *
 * JSON lines are written synchronously: with pino's default asynchronous stdout, lines written to
 * a busy pipe were seen out of order (a shutdown's step 6 before its step 5) and the last ones could
 * be lost on exit. Our processes log per event, not per run, so the cost is small.
 */
export function createLogger({ level, name, pretty = process.stdout.isTTY === true }: LoggerOptions): Logger {
  if (pretty) {
    return pino({ level, name, redact: LOG_REDACTION, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ level, name, redact: LOG_REDACTION }, pino.destination({ dest: 1, sync: true }));
}
