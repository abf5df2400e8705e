/**
 * The dependency graph of agents: cycles, depths, layers, dependents, topological order.
 * Pure functions over `name → dependencies`; unknown dependencies are the registry's concern.
 */
export type DependencyGraph = ReadonlyMap<string, readonly string[]>;

/**
 * Every elementary cycle found by a depth-first search, each as a path that returns to its start
 * (`['a', 'b', 'a']`). Each cycle is reported once, starting from its smallest name.
 */
export function findCycles(graph: DependencyGraph): string[][] {
  const cycles = new Map<string, string[]>();
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];

  const visit = (node: string) => {
    state.set(node, 'visiting');
    stack.push(node);
    for (const dep of graph.get(node) ?? []) {
      if (!graph.has(dep)) continue;
      const s = state.get(dep);
      if (s === 'visiting') {
        const cycle = stack.slice(stack.indexOf(dep));
        const start = cycle.indexOf([...cycle].sort()[0]!);
        const rotated = [...cycle.slice(start), ...cycle.slice(0, start)];
        cycles.set(rotated.join('\u0000'), [...rotated, rotated[0]!]);
      } else if (s === undefined) {
        visit(dep);
      }
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return [...cycles.values()];
}

/** depth(a) = 0 without dependencies, else 1 + max depth of its dependencies. Graph must be acyclic. */
export function computeDepths(graph: DependencyGraph): Map<string, number> {
  const depths = new Map<string, number>();
  const depthOf = (node: string): number => {
    const known = depths.get(node);
    if (known !== undefined) return known;
    const deps = (graph.get(node) ?? []).filter((d) => graph.has(d));
    const depth = deps.length === 0 ? 0 : 1 + Math.max(...deps.map(depthOf));
    depths.set(node, depth);
    return depth;
  };
  for (const node of graph.keys()) depthOf(node);
  return depths;
}

/** Layer k holds the agents of depth k, names sorted. */
export function layersOf(depths: ReadonlyMap<string, number>): string[][] {
  const layers: string[][] = [];
  for (const [name, depth] of depths) {
    layers[depth] ??= [];
    layers[depth].push(name);
  }
  return Array.from(layers, (layer) => (layer ?? []).sort());
}

/** Every agent that depends on `root`, directly or transitively (not including `root`). */
export function transitiveDependents(graph: DependencyGraph, root: string): Set<string> {
  const dependents = new Map<string, string[]>();
  for (const [node, deps] of graph) for (const d of deps) (dependents.get(d) ?? dependents.set(d, []).get(d)!).push(node);
  const seen = new Set<string>();
  const queue = [root];
  while (queue.length > 0) {
    for (const next of dependents.get(queue.shift()!) ?? []) {
      if (!seen.has(next)) {
        seen.add(next);
        queue.push(next);
      }
    }
  }
  return seen;
}

/** `names` ordered so every agent comes after its dependencies (by depth, then name). */
export function topologicalOrder(depths: ReadonlyMap<string, number>, names: Iterable<string>): string[] {
  return [...names].sort((a, b) => depths.get(a)! - depths.get(b)! || a.localeCompare(b));
}
