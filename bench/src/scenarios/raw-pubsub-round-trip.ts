import type { BenchRedis } from '../bench-redis.js';
import { preciseNow, within } from '../samples.js';

/**
 * The baseline of an agent request: a bare Redis pub/sub round trip. The requester publishes on a
 * request channel; a responder (its own subscriber and publisher connections) publishes the answer
 * on a reply channel the requester listens to. One request in flight at a time.
 */
export async function rawPubSubRoundTrips(redis: BenchRedis, count: number): Promise<number[]> {
  const prefix = redis.prefix('rpc-raw');
  const requests = `${prefix}:requests`;
  const replies = `${prefix}:replies`;
  const [requester, requesterSub, responder, responderSub] = [redis.client(), redis.client(), redis.client(), redis.client()];

  responderSub.on('message', (_channel: string, message: string) => {
    const { id, payload } = JSON.parse(message) as { id: number; payload: unknown };
    void responder.publish(replies, JSON.stringify({ id, result: payload }));
  });
  const pending = new Map<number, () => void>();
  requesterSub.on('message', (_channel: string, message: string) => {
    const { id } = JSON.parse(message) as { id: number };
    pending.get(id)?.();
    pending.delete(id);
  });
  await Promise.all([responderSub.subscribe(requests), requesterSub.subscribe(replies)]);

  const samples: number[] = [];
  for (let id = 0; id < count; id += 1) {
    const start = preciseNow();
    const answered = new Promise<void>((resolve) => pending.set(id, resolve));
    await requester.publish(requests, JSON.stringify({ id, payload: { n: id } }));
    await within(answered, 10_000, `raw pub/sub reply ${id}`);
    samples.push(preciseNow() - start);
  }
  await Promise.all([requesterSub.unsubscribe(), responderSub.unsubscribe()]);
  return samples;
}
