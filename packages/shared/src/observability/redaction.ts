import type { LoggerOptions as PinoOptions } from 'pino';

/**
 * Keeping secrets out of what the processes print: log lines, error messages, the start banner.
 * A `REDIS_URL` carries its password (`redis://:s3cret@host:6379`), the dashboard's token and
 * password are configuration values, and an HTTP request carries its Authorization header.
 */

const URL_CREDENTIALS = /((?:\b[a-z][a-z0-9+.-]*:)?\/\/[^\s:/@]*:)[^\s/@]+@/gi;

/**
 * `text` with the password of every URL in it masked: `redis://:s3cret@host:6379/0` becomes
 * `redis://:***@host:6379/0`, `rediss://app:s3cret@host` becomes `rediss://app:***@host`. The user
 * name stays (it tells which account); a URL without a password is unchanged.
 */
export function maskUrlCredentials(text: string): string {
  return text.replace(URL_CREDENTIALS, '$1***@');
}

/**
 * A value meant to be a URL, for an error message: everything before its last `@` (user and
 * password) hidden, however malformed the rest is: `redis//:s3cret@host` becomes `redis//***@host`.
 */
export function hideUrlUserInfo(value: string): string {
  return value.includes('@') ? value.replace(/^(.*?\/\/)?.*@/s, '$1***@') : value;
}

export const REDACTED = '[redacted]';

/** Fields whose values are URLs: logged with their password masked. */
const URL_FIELDS = ['url', 'redisUrl'];
/** Fields whose values are secrets: never logged. */
const SECRET_FIELDS = ['password', 'token', 'authorization', 'cookie', 'dashboardToken', 'dashboardPassword'];

/**
 * pino's `redact` option: the fields above, at the top of a log line or one level down (`err`,
 * `config`, `req.headers` in `req`), are masked or replaced by `[redacted]` before the line is
 * written. Free text is not searched: code that puts a URL in a message masks it itself.
 */
export const LOG_REDACTION: NonNullable<PinoOptions['redact']> = {
  paths: [...URL_FIELDS, ...SECRET_FIELDS].flatMap((field) => [field, `*.${field}`, `req.headers.${field}`]),
  censor: (value: unknown, path: string[]) => {
    const field = path[path.length - 1] ?? '';
    if (URL_FIELDS.includes(field) && typeof value === 'string') return maskUrlCredentials(value);
    return REDACTED;
  },
};
