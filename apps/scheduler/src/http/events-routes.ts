import { Router } from 'express';
import { InvalidInputError, createEventFilter, parseInput, recentEventsQuery, type EventBus, type Logger } from '@werkpilot/shared';
import { LiveEventStreams, RETRY_AFTER_SECONDS, type LiveStreamLimits } from './live-event-streams.js';

export interface EventsRoutesDeps {
  bus: EventBus;
  log: Logger;
  /** Bounds of the live streams (SSE_MAX_CLIENTS, backlog, stall, heartbeat); defaults otherwise. */
  limits?: Partial<LiveStreamLimits>;
}

/** The events router, plus its live streams (how many are open, how many were dropped). */
export interface EventsRouter extends Router {
  readonly activeStreams: number;
  readonly streams: LiveEventStreams;
}

/**
 * `GET /api/events`: the bus as server-sent events, one `data: <event JSON>` message per event, in
 * bus order; `?type=agent:*,circuit:*` and `?agent=crm-sync,lead-scoring` filter it. The stream
 * opens with `: connected` once the subscription is live (events published after it are seen) and
 * a `: heartbeat` comment follows every `heartbeatMs`. At most `maxClients` streams at once (503
 * with `Retry-After` beyond); a client that does not keep up is dropped (live-event-streams.ts).
 *
 * `GET /api/events/recent?limit=N` (default 100, at most 1000): the last N events of the capped
 * history stream, oldest first, with the same optional filters applied to them.
 */
export function eventsRoutes({ bus, log, limits = {} }: EventsRoutesDeps): EventsRouter {
  const router = Router() as EventsRouter;
  const streams = new LiveEventStreams({ bus, log, limits });
  Object.defineProperty(router, 'activeStreams', { get: () => streams.size });
  Object.defineProperty(router, 'streams', { value: streams });

  router.get('/api/events/recent', async (req, res) => {
    const { limit } = parseInput(recentEventsQuery, { limit: req.query.limit }, 'query');
    const filter = createEventFilter({ types: queryList(req.query.type, 'type'), agents: queryList(req.query.agent, 'agent') });
    const events = await bus.recent(Math.max(1, limit));
    res.json({ events: events.filter(filter) });
  });

  router.get('/api/events', async (req, res) => {
    const types = queryList(req.query.type, 'type');
    const agents = queryList(req.query.agent, 'agent');
    // Unfiltered streams (the dashboard's) share one write per burst without testing each event.
    const filter = types || agents ? createEventFilter({ types, agents }) : undefined;
    if (!streams.hasRoom()) {
      res.set('Retry-After', String(RETRY_AFTER_SECONDS));
      res.status(503).json({
        error: `too many live event streams: ${streams.maxClients} are open (SSE_MAX_CLIENTS); retry in ${RETRY_AFTER_SECONDS} s, or read /api/events/recent`,
      });
      return;
    }
    await streams.open(res, filter);
  });

  return router;
}

/** A query parameter given once, several times, or comma-separated, as a list of strings. */
function queryList(value: unknown, name: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value;
  throw new InvalidInputError(`${name}: give it as ?${name}=a,b`);
}
