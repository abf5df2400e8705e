import { bodySegment, type BodySegment } from './prepared-body.js';
import { turnBudget } from './turn-budget.js';

/**
 * Agents' rendered fragments (one string per kind: a Prometheus family, a JSON variant), grouped
 * into blocks of consecutive agents in registry order; each block of each kind is one body segment
 * (prepared-body.ts). When an agent changes, only its block is joined, encoded and — on demand —
 * compressed again; every other block is reused as it is, bytes and compression alike.
 */
export class FragmentBlocks {
  private readonly position = new Map<string, number>();
  /** [kind][block]. */
  private readonly blocks: BodySegment[][];
  private readonly empty = bodySegment('');

  constructor(
    private readonly names: readonly string[],
    private readonly kinds: number,
    private readonly blockSize = 128,
  ) {
    for (const [i, name] of names.entries()) this.position.set(name, i);
    const count = Math.ceil(names.length / blockSize);
    this.blocks = Array.from({ length: kinds }, () => Array.from({ length: count }, () => this.empty));
  }

  /**
   * Rebuilds the blocks that hold any of `agents`. `fragments(agent)` gives the agent's strings by
   * kind (undefined for an agent not rendered yet). A block whose text equals that of the kind
   * before it (`sameAs`) shares its segment, so identical variants are compressed once.
   */
  async update(agents: Iterable<string>, fragments: (agent: string) => readonly string[] | undefined, sameAs: (kind: number) => number | undefined = () => undefined): Promise<void> {
    const touched = new Set<number>();
    for (const agent of agents) {
      const at = this.position.get(agent);
      if (at !== undefined) touched.add(Math.floor(at / this.blockSize));
    }
    const turn = turnBudget();
    for (const block of [...touched].sort((a, b) => a - b)) {
      const members = this.names.slice(block * this.blockSize, (block + 1) * this.blockSize).map(fragments);
      const texts: string[] = [];
      for (let kind = 0; kind < this.kinds; kind += 1) {
        const text = members.map((m) => m?.[kind] ?? '').join('');
        texts.push(text);
        const twin = sameAs(kind);
        this.blocks[kind]![block] = twin !== undefined && texts[twin] === text ? this.blocks[twin]![block]! : bodySegment(text);
        await turn.yieldIfDue();
      }
    }
  }

  segments(kind: number): readonly BodySegment[] {
    return this.blocks[kind]!;
  }
}
