import type { ChainableCommander, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { PublishPayloadError } from '../process/errors.js';
import type { Keys } from '../redis/keys.js';
import { MAX_PUBLISH_PAYLOAD_BYTES } from '../run/size-limits.js';
import { duplicateRedisConnection } from '../redis/redis-connection.js';

/** One message on the bus: `{ type, agent?, at, data }`, JSON on `<prefix>:events`. */
export interface BusEvent<TData = Record<string, unknown>> {
  type: string;
  agent?: string;
  at: string;
  data: TData;
}

export type BusHandler = (event: BusEvent) => void;

/** How many events the history stream keeps (its XADD MAXLEN ~) unless the bus is told otherwise. */
export const BUS_HISTORY_LENGTH = 1000;

/**
 * Lua for scripts that publish as part of their state change (so an event is sent exactly when its
 * change happens): `emitJson(stream, channel, maxlen, json)` for an event the caller built (cheapest
 * for Redis: no encoding in the script), `emit(stream, channel, maxlen, type, agent, at, data)` for
 * one whose data only the script knows (cjson-encoded), and `emitDataJson(...)` for one whose data
 * the script holds as JSON text already (cjson would turn a stored empty array `[]` into `{}`). All
 * PUBLISH it and XADD it to the capped history, as EventBus.addTo does.
 */
export const BUS_EMIT_LUA = `
local function emitJson(stream, channel, maxlen, json)
  redis.call('PUBLISH', channel, json)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', json)
end
local function emit(stream, channel, maxlen, kind, agent, at, data)
  emitJson(stream, channel, maxlen, cjson.encode({ type = kind, agent = agent, at = at, data = data }))
end
local function emitDataJson(stream, channel, maxlen, kind, agent, at, dataJson)
  emitJson(stream, channel, maxlen, '{"type":' .. cjson.encode(kind) .. ',"agent":' .. cjson.encode(agent) .. ',"at":' .. cjson.encode(at) .. ',"data":' .. dataJson .. '}')
end
`;

export interface EventBusOptions {
  /** Connection for PUBLISH / XADD / XREVRANGE. */
  redis: Redis;
  keys: Keys;
  log: Logger;
  /** How many events the history stream keeps. */
  historyLength?: number;
  clock?: () => number;
}

/**
 * The message bus: Redis pub/sub on `<prefix>:events`, plus a capped stream of the last events
 * for the dashboard's history. Any Redis client can SUBSCRIBE to the channel.
 *
 * Subscribing needs a connection in subscriber mode; it is created on first use (a duplicate of
 * the command connection) and shared by all handlers of this bus.
 */
export class EventBus {
  private readonly redis: Redis;
  private readonly keys: Keys;
  private readonly log: Logger;
  private readonly historyLength: number;
  private readonly clock: () => number;
  private subscriber: Redis | undefined;
  private subscribing: Promise<void> | undefined;
  private readonly handlers = new Set<BusHandler>();

  constructor({ redis, keys, log, historyLength = BUS_HISTORY_LENGTH, clock = Date.now }: EventBusOptions) {
    this.redis = redis;
    this.keys = keys;
    this.log = log.child({ component: 'bus' });
    this.historyLength = historyLength;
    this.clock = clock;
  }

  /** The capped history's length (the XADD MAXLEN ~ of every event). */
  get historySize(): number {
    return this.historyLength;
  }

  /** The event as it travels: one JSON line (for scripts that publish it, see BUS_EMIT_LUA). */
  encode(type: string, data: Record<string, unknown>, agent?: string): string {
    return JSON.stringify(this.event(type, data, agent));
  }

  /** Builds an event stamped with the bus clock. */
  event<T extends Record<string, unknown>>(type: string, data: T, agent?: string): BusEvent<T> {
    return { type, ...(agent !== undefined ? { agent } : {}), at: new Date(this.clock()).toISOString(), data };
  }

  /** Publishes one event (one round trip: PUBLISH and XADD pipelined). */
  async publish(type: string, data: Record<string, unknown> = {}, agent?: string): Promise<void> {
    const pipeline = this.redis.pipeline();
    this.addTo(pipeline, this.event(type, data, agent));
    await pipeline.exec();
  }

  /**
   * Queues the event's PUBLISH and XADD on a pipeline or MULTI the caller executes, so a state
   * change and its event travel in the same round trip.
   */
  addTo(pipeline: ChainableCommander, event: BusEvent): void {
    const json = JSON.stringify(event);
    pipeline.publish(this.keys.eventsChannel, json);
    pipeline.xadd(this.keys.eventsStream, 'MAXLEN', '~', String(this.historyLength), '*', 'event', json);
  }

  /** The most recent events, oldest first. */
  async recent(limit = 100): Promise<BusEvent[]> {
    const entries = await this.redis.xrevrange(this.keys.eventsStream, '+', '-', 'COUNT', Math.max(1, Math.min(limit, this.historyLength)));
    return entries
      .map(([, fields]) => parseEvent(fields[1]))
      .filter((e): e is BusEvent => e !== undefined)
      .reverse();
  }

  /** Calls `handler` for every event on the bus until the returned function is called. */
  async subscribe(handler: BusHandler): Promise<() => void> {
    this.handlers.add(handler);
    await this.ensureSubscribed();
    return () => {
      this.handlers.delete(handler);
    };
  }

  private ensureSubscribed(): Promise<void> {
    if (this.subscribing) return this.subscribing;
    const subscriber = duplicateRedisConnection(this.redis, 'bus-sub');
    this.subscriber = subscriber;
    subscriber.on('error', () => {}); // the command connection already logs outages
    subscriber.on('message', (_channel: string, message: string) => {
      const event = parseEvent(message);
      if (!event) return;
      for (const handler of this.handlers) {
        try {
          handler(event);
        } catch (err) {
          this.log.error({ err, type: event.type }, 'bus handler threw');
        }
      }
    });
    this.subscribing = subscriber.subscribe(this.keys.eventsChannel).then(() => undefined);
    return this.subscribing;
  }

  /** Ends the subscriber connection; the command connection belongs to the caller. */
  async close(): Promise<void> {
    this.handlers.clear();
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    this.subscribing = undefined;
    if (subscriber) await subscriber.quit().catch(() => subscriber.disconnect());
  }
}

/** Longest topic an agent may publish under (it becomes the event's `type`). */
export const MAX_TOPIC_BYTES = 200;

/**
 * `ctx.publish(topic, payload)`: the payload travels as `data.payload` (any JSON value fits).
 * Refused with PublishPayloadError — nothing published — when the topic is not a short string or
 * the payload is not JSON or over MAX_PUBLISH_PAYLOAD_BYTES: every subscriber receives each event,
 * Redis keeps the last 1000, and a subscriber that falls 32 MB behind is disconnected by Redis.
 */
export async function publishAgentMessage(bus: EventBus, agent: string, topic: unknown, payload: unknown): Promise<void> {
  if (typeof topic !== 'string' || topic === '' || Buffer.byteLength(topic) > MAX_TOPIC_BYTES) {
    throw new PublishPayloadError(
      `ctx.publish: the topic must be a non-empty string of at most ${MAX_TOPIC_BYTES} bytes, got ${typeof topic === 'string' ? `${Buffer.byteLength(topic)} bytes` : typeof topic}`,
    );
  }
  let json: string | undefined;
  try {
    json = JSON.stringify(payload ?? null);
  } catch (err) {
    throw new PublishPayloadError(`ctx.publish('${topic}'): the payload is not JSON-serialisable: ${(err as Error).message}`);
  }
  if (json === undefined) throw new PublishPayloadError(`ctx.publish('${topic}'): the payload is not JSON-serialisable (a ${typeof payload})`);
  const bytes = Buffer.byteLength(json);
  if (bytes > MAX_PUBLISH_PAYLOAD_BYTES) {
    throw new PublishPayloadError(
      `ctx.publish('${topic}'): the payload is ${bytes} bytes; the limit is ${MAX_PUBLISH_PAYLOAD_BYTES} (64 KiB) — store large data elsewhere and publish its key`,
    );
  }
  await bus.publish(topic, { payload: payload ?? null }, agent);
}

function parseEvent(json: string | undefined): BusEvent | undefined {
  if (json === undefined) return undefined;
  try {
    const value = JSON.parse(json) as BusEvent;
    return typeof value === 'object' && value !== null && typeof value.type === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}
