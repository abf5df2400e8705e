import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

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
 */
export function createLogger({ level, name, pretty = process.stdout.isTTY === true }: LoggerOptions): Logger {
  return pino({
    level,
    name,
    ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } } : {}),
  });
}
