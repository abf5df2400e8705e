import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { InvalidInputError, WerkpilotError } from '../process/errors.js';
import { idempotencyKeyOf, type Keys } from '../redis/keys.js';

/**
 * Idempotent manual triggers: `POST /api/agents/:name/run` with an `Idempotency-Key` header (or an
 * `idempotencyKey` field, CLI `--idempotency-key`). The first request with a key claims it — one
 * `SET NX PX` holding the ids its run will get, chosen before the run is queued — and queues the
 * run; any request with the same key for the same agent within the TTL answers those ids and
 * queues nothing, however many arrive at once (Redis serialises the SETs: one wins). A client that
 * lost its answer (a timeout, a dropped connection) can therefore simply send the request again.
 * The key also remembers a fingerprint of the request (its data and `withDependents`): the same key
 * with a different request is refused (IdempotencyConflictError, 409), as Stripe does, rather than
 * answered with a run of something else.
 */

/** Default TTL of an idempotency key: 24 hours (IDEMPOTENCY_TTL_MS). */
export const DEFAULT_IDEMPOTENCY_TTL_MS = 86_400_000;

const MAX_KEY_LENGTH = 255;
const PRINTABLE = /^[\x21-\x7e]+$/;

/** What a claimed key answers: the ids of the first request's run (and pipeline). */
export interface IdempotentResult {
  runId: string;
  pipelineId?: string;
  runs?: { agent: string; runId: string }[];
}

/** The same idempotency key was sent with a different request. */
export class IdempotencyConflictError extends WerkpilotError {
  constructor(agent: string) {
    super(`Idempotency-Key was already used for a different run of ${agent} (other data or withDependents); use a new key for a new request`);
  }
}

/** Refuses a key that is empty, longer than 255 characters or not printable ASCII. */
export function checkIdempotencyKey(key: unknown): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH || !PRINTABLE.test(key)) {
    throw new InvalidInputError(`Idempotency-Key must be 1 to ${MAX_KEY_LENGTH} printable ASCII characters without spaces (a UUID is a good one)`);
  }
  return key;
}

/** A fingerprint of what a request asks for, so a reused key with another request is told apart. */
export function requestFingerprint(request: { data?: unknown; withDependents?: boolean }): string {
  return createHash('sha256')
    .update(JSON.stringify([request.data ?? null, request.withDependents === true]))
    .digest('hex')
    .slice(0, 32);
}

interface Claim {
  fingerprint: string;
  result: IdempotentResult;
}

/**
 * Claims `key` for a request whose run will get the ids in `planned`: `{ claimed: true }` when this
 * request is the first (the caller queues the run, and releases the claim should that fail), else
 * the first request's ids. Throws IdempotencyConflictError for the same key with another request.
 */
export async function claimIdempotencyKey(
  { redis, keys }: { redis: Redis; keys: Keys },
  agent: string,
  key: string,
  fingerprint: string,
  planned: IdempotentResult,
  ttlMs = DEFAULT_IDEMPOTENCY_TTL_MS,
): Promise<{ claimed: true } | { claimed: false; result: IdempotentResult }> {
  const redisKey = idempotencyKeyOf(keys, agent, key);
  const claim: Claim = { fingerprint, result: planned };
  // A claim that expires between the SET and the GET is claimed again on the next turn.
  for (;;) {
    if ((await redis.set(redisKey, JSON.stringify(claim), 'PX', ttlMs, 'NX')) === 'OK') return { claimed: true };
    const existing = await redis.get(redisKey);
    if (existing === null) continue;
    const first = JSON.parse(existing) as Claim;
    if (first.fingerprint !== fingerprint) throw new IdempotencyConflictError(agent);
    return { claimed: false, result: first.result };
  }
}

/** Gives up a claim whose run could not be queued, so a retry of the request can queue it. */
export async function releaseIdempotencyKey({ redis, keys }: { redis: Redis; keys: Keys }, agent: string, key: string): Promise<void> {
  await redis.del(idempotencyKeyOf(keys, agent, key));
}
