import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';

/** Dashboard credentials from the config; none configured means read-only. */
export interface DashboardCredentials {
  token?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
}

export type AuthMode = 'none' | 'token' | 'basic' | 'token+basic';

/** Paths open without credentials: scrapers and probes must not need the dashboard's secret. */
const OPEN_PATHS = new Set(['/metrics', '/healthz', '/readyz']);
const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export const READ_ONLY_MESSAGE =
  'read-only: operator actions are disabled because no dashboard credentials are configured; ' +
  'set DASHBOARD_TOKEN (Bearer) or DASHBOARD_USER and DASHBOARD_PASSWORD (Basic) to enable them';

export interface DashboardAuth {
  mode: AuthMode;
  /** Whether operator actions (and Bull Board's buttons) are allowed at all. */
  canMutate: boolean;
  middleware: RequestHandler;
  /** Whether an Authorization header carries valid credentials (false when none are configured). */
  isAuthorised(authorization: string | undefined): boolean;
}

/**
 * Guards every page and API call except /metrics, /healthz and /readyz.
 *
 * With `DASHBOARD_TOKEN`: `Authorization: Bearer <token>`; a browser can also answer the Basic
 * prompt with the token as the password (any user name), so the dashboard works without a proxy.
 * With `DASHBOARD_USER`/`DASHBOARD_PASSWORD`: HTTP Basic. Secrets are compared in constant time
 * (over SHA-256 digests, so the length does not leak either). Without credentials every read is
 * open and every mutation answers 403 saying how to enable it.
 */
export function createDashboardAuth(credentials: DashboardCredentials): DashboardAuth {
  const token = credentials.token ? digest(credentials.token) : undefined;
  const user = credentials.user && credentials.password ? digest(credentials.user) : undefined;
  const password = credentials.user && credentials.password ? digest(credentials.password) : undefined;
  const mode: AuthMode = token && user ? 'token+basic' : token ? 'token' : user ? 'basic' : 'none';

  const isAuthorised = (header: string | undefined): boolean => {
    if (!header) return false;
    const [scheme = '', value = ''] = header.trim().split(/\s+/, 2);
    if (scheme.toLowerCase() === 'bearer') return token !== undefined && sameDigest(digest(value), token);
    if (scheme.toLowerCase() !== 'basic') return false;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const [givenUser, givenPassword] = [digest(decoded.slice(0, colon)), digest(decoded.slice(colon + 1))];
    // Every comparison always runs, so timing does not tell which part was wrong.
    const isUser = user !== undefined && sameDigest(givenUser, user);
    const isPassword = password !== undefined && sameDigest(givenPassword, password);
    const isTokenAsPassword = token !== undefined && sameDigest(givenPassword, token);
    return (isUser && isPassword) || isTokenAsPassword;
  };

  const middleware: RequestHandler = (req, res, next) => {
    if (OPEN_PATHS.has(req.path.replace(/\/+$/, '').toLowerCase())) return next();
    if (mode === 'none') {
      if (MUTATING_METHODS.has(req.method)) {
        res.status(403).json({ error: READ_ONLY_MESSAGE });
        return;
      }
      return next();
    }
    if (isAuthorised(req.headers.authorization)) return next();
    res.setHeader('WWW-Authenticate', 'Basic realm="werkpilot", charset="UTF-8"');
    res.status(401).json({ error: 'authentication required: send Authorization: Bearer <DASHBOARD_TOKEN> or HTTP Basic credentials' });
  };
  return { mode, canMutate: mode !== 'none', middleware, isAuthorised };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function sameDigest(a: Buffer, b: Buffer): boolean {
  return timingSafeEqual(a, b);
}
