import type { Request, RequestHandler } from 'express';

/**
 * What an operator action (POST, PUT, PATCH, DELETE) must look like to be accepted, so that no
 * other site can make an operator's browser act: browsers resend Basic credentials to this server
 * on any site's form post, and a form can post `text/plain` that looks like JSON.
 *
 * - `refuseCrossSite`: 403 for a request the browser marks as cross-site (`Sec-Fetch-Site`) or
 *   whose `Origin` is not this server (its Host, or X-Forwarded-Host behind a proxy). A browser
 *   cannot forge either header; non-browser clients (the CLI, curl) send neither and pass.
 * - `requireJson`: 415 for a body that is not `application/json`. A request with no body and no
 *   Content-Type passes (nothing to parse: the CLI's and Bull Board's bodyless actions).
 */
const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export function refuseCrossSite(): RequestHandler {
  return (req, res, next) => {
    if (!MUTATING_METHODS.has(req.method)) return next();
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    if (site === 'cross-site' || (origin !== undefined && !isOwnOrigin(origin, req))) {
      res.status(403).json({
        error: `cross-site request refused: operator actions are taken only from this server's own pages or from clients that are not browsers (Origin ${shorten(origin ?? 'not sent')}, Sec-Fetch-Site ${shorten(site ?? 'not sent')})`,
      });
      return;
    }
    next();
  };
}

export function requireJson(): RequestHandler {
  return (req, res, next) => {
    if (!MUTATING_METHODS.has(req.method)) return next();
    const type = req.headers['content-type'];
    if (type === undefined ? !hasBody(req) : mediaType(type) === 'application/json') return next();
    res.status(415).json({ error: `operator actions take a JSON body: send Content-Type: application/json, or no body at all (got ${shorten(type ?? 'a body without a Content-Type')})` });
  };
}

function isOwnOrigin(origin: string, req: Request): boolean {
  let host: string;
  try {
    // `null` (sandboxed frames, file: pages) and anything unparsable are nobody's origin.
    host = new URL(origin).host;
  } catch {
    return false;
  }
  const own = [req.headers.host, firstValue(req.headers['x-forwarded-host'])].filter((h): h is string => Boolean(h)).map(normaliseHost);
  return own.includes(host);
}

/** `Host: 127.0.0.1:80` and an origin's `http://127.0.0.1` name the same host: let URL normalise both. */
function normaliseHost(host: string): string {
  try {
    return new URL(`http://${host.trim()}`).host;
  } catch {
    return '';
  }
}

function firstValue(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return value?.split(',')[0];
}

function hasBody(req: Request): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

function mediaType(contentType: string): string {
  return (contentType.split(';')[0] ?? '').trim().toLowerCase();
}

function shorten(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}
