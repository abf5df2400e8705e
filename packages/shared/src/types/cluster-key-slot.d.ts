// cluster-key-slot (ioredis's own slot calculation) ships no types.
declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0..16383) of a key, honouring a `{hash tag}`. */
  function calculateSlot(key: string): number;
  export default calculateSlot;
}
