import calculateSlot from 'cluster-key-slot';

/** Redis Cluster's slot count. */
const SLOTS = 16384;

/**
 * The key prefix of shard `index` of `count` (WERKPILOT_SHARDS). One shard is the prefix itself, so
 * a single-shard fleet keeps exactly the keys it always had. With several, shard i's prefix is
 * `<prefix>.shard<i>`, or `<prefix>.shard<i>.<n>` with the smallest n that puts its hash tag in the
 * i-th K-th of the slot space: a cluster whose masters hold equal slot ranges (what
 * `redis-cli --cluster create` makes) then serves K shards from K different masters when K is the
 * number of masters, rather than wherever the names happen to hash.
 */
export function shardPrefix(prefix: string, index: number, count: number): string {
  if (count === 1) return prefix;
  const [from, to] = [Math.floor((index * SLOTS) / count), Math.floor(((index + 1) * SLOTS) / count)];
  const base = `${prefix}.shard${index}`;
  for (let n = 0; ; n += 1) {
    const candidate = n === 0 ? base : `${base}.${n}`;
    const slot = calculateSlot(candidate);
    if (slot >= from && slot < to) return candidate;
  }
}

/** The cluster slot every key of a prefix lives in (its hash tag is the whole prefix). */
export function prefixSlot(prefix: string): number {
  return calculateSlot(prefix);
}
