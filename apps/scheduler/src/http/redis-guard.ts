import type { RequestHandler, Response } from 'express';
import type { RedisAvailability } from '@werkpilot/shared';

/** The body of every answer the guard gives instead of the route's. */
export const REDIS_UNAVAILABLE = { error: 'redis unavailable' } as const;

export interface RedisGuardOptions {
  /** How long a request may go unanswered before the guard asks whether Redis answers. Default 100. */
  probeAfterMs?: number;
}

/**
 * Answers 503 `{ "error": "redis unavailable" }` (with `Retry-After: 1`) within a second instead of
 * letting a request wait on Redis: at once, sending nothing to Redis, while the connection is down
 * or the last probe found Redis not answering (re-probed, at most one PING at a time); and, for a
 * request already passed on, as soon as it has waited `probeAfterMs` and a probe finds Redis frozen.
 * So a Redis outage adds no commands of ours to the connection's queue, and no client hangs.
 *
 * A mutation passed on before Redis froze may still take effect when Redis answers again: its 503
 * says so. The route's own answer, when it comes after the 503, is dropped.
 */
export function redisGuard(availability: RedisAvailability, { probeAfterMs = 100 }: RedisGuardOptions = {}): RequestHandler {
  return async (req, res, next) => {
    if (!availability.isConnected) return unavailable(res);
    if (availability.hasFailedLastProbe && !(await availability.check()).available) return unavailable(res);
    const timer = setTimeout(async () => {
      if (res.headersSent) return;
      const verdict = await availability.check();
      if (verdict.available || res.headersSent) return;
      const isRead = req.method === 'GET' || req.method === 'HEAD';
      unavailable(res, isRead ? undefined : 'redis unavailable: the request was sent and may still take effect when redis answers');
      // The route answers later, if ever, into a response already sent: let it write nowhere
      // (instead of throwing "headers already sent" into the error handler's log).
      const ignore = () => res;
      Object.assign(res, { status: ignore, set: ignore, type: ignore, vary: ignore, setHeader: ignore, json: ignore, send: ignore, write: () => true, end: ignore });
    }, probeAfterMs);
    res.once('finish', () => clearTimeout(timer));
    res.once('close', () => clearTimeout(timer));
    next();
  };
}

function unavailable(res: Response, message?: string): void {
  res
    .status(503)
    .set('Retry-After', '1')
    .json(message ? { error: message } : REDIS_UNAVAILABLE);
}
