import { Router, type Response } from 'express';
import { InvalidInputError, createEventFilter, parseInput, recentEventsQuery, type BusEvent, type EventBus, type Logger } from '@werkpilot/shared';

export interface EventsRoutesDeps {
  bus: EventBus;
  log: Logger;
  /** Interval of the `: heartbeat` comment that keeps proxies from closing an idle stream. Default 15000. */
  heartbeatMs?: number;
}

/** The events router, plus how many live streams it is serving (each holds one bus handler). */
export interface EventsRouter extends Router {
  readonly activeStreams: number;
}

/**
 * `GET /api/events`: the bus as server-sent events, one `data: <event JSON>` message per event, in
 * bus order; `?type=agent:*,circuit:*` and `?agent=crm-sync,lead-scoring` filter it. The stream
 * opens with `: connected` once the subscription is live (events published after it are seen) and
 * a `: heartbeat` comment follows every `heartbeatMs`. A client that disconnects frees its handler.
 *
 * `GET /api/events/recent?limit=N` (default 100, at most 1000): the last N events of the capped
 * history stream, oldest first, with the same optional filters applied to them.
 */
export function eventsRoutes({ bus, log, heartbeatMs = 15_000 }: EventsRoutesDeps): EventsRouter {
  const router = Router() as EventsRouter;
  let activeStreams = 0;
  Object.defineProperty(router, 'activeStreams', { get: () => activeStreams });

  router.get('/api/events/recent', async (req, res) => {
    const { limit } = parseInput(recentEventsQuery, { limit: req.query.limit }, 'query');
    const filter = createEventFilter({ types: queryList(req.query.type, 'type'), agents: queryList(req.query.agent, 'agent') });
    const events = await bus.recent(Math.max(1, limit));
    res.json({ events: events.filter(filter) });
  });

  router.get('/api/events', async (req, res) => {
    const filter = createEventFilter({ types: queryList(req.query.type, 'type'), agents: queryList(req.query.agent, 'agent') });
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // nginx: do not buffer the stream
    });
    res.socket?.setNoDelay(true);
    activeStreams++;
    let isOpen = true;
    let unsubscribe: (() => void) | undefined;
    const heartbeat = setInterval(() => write(res, `: heartbeat ${new Date().toISOString()}\n\n`), heartbeatMs);
    res.on('close', () => {
      isOpen = false;
      activeStreams--;
      clearInterval(heartbeat);
      unsubscribe?.();
    });
    try {
      const stop = await bus.subscribe((event: BusEvent) => {
        if (filter(event)) write(res, `data: ${JSON.stringify(event)}\n\n`);
      });
      if (isOpen) unsubscribe = stop;
      else stop();
    } catch (err) {
      log.warn({ err }, 'event stream could not subscribe to the bus');
      res.end();
      return;
    }
    write(res, 'retry: 3000\n: connected\n\n');
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

function write(res: Response, chunk: string): void {
  if (!res.writableEnded && !res.destroyed) res.write(chunk);
}
