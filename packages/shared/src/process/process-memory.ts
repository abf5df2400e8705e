import { getHeapStatistics } from 'node:v8';

export interface ProcessMemory {
  /** Heap used as a percentage of the heap size limit (what `--max-old-space-size` sets). */
  heapPercent: number;
  rssMB: number;
  heapUsedMB: number;
  heapLimitMB: number;
}

const MB = 1024 * 1024;
const round1 = (n: number) => Math.round(n * 10) / 10;

/** This process's memory, in the predecessor's terms (heapPercent, rssMB). */
export function readProcessMemory(): ProcessMemory {
  const heap = getHeapStatistics();
  return {
    heapPercent: round1((heap.used_heap_size / heap.heap_size_limit) * 100),
    rssMB: round1(process.memoryUsage.rss() / MB),
    heapUsedMB: round1(heap.used_heap_size / MB),
    heapLimitMB: round1(heap.heap_size_limit / MB),
  };
}
