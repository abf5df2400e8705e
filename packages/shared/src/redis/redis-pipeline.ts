import type { ChainableCommander } from 'ioredis';

/** Executes a pipeline and throws the first command error instead of returning it. */
export async function execOrThrow(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
