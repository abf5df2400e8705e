import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AgentDefinition } from '@werkpilot/shared';

/**
 * A synthetic fleet of `count` scheduled no-op agents shaped like a real registry: spread over the
 * hour, all three priorities, and a dependency tree (agent i needs agent ⌊i/10⌋), so layers, depths
 * and gating all have work to do.
 */
export function fleetDefinitions(count: number): AgentDefinition[] {
  return Array.from({ length: count }, (_, i) => fleetAgent(i));
}

function fleetAgent(i: number): AgentDefinition {
  return {
    name: fleetName(i),
    schedule: { cron: `${i % 60} * * * *` },
    priority: ((i % 3) + 1) as 1 | 2 | 3,
    dependsOn: i >= 10 ? [fleetName(Math.floor(i / 10))] : [],
    run: async () => null,
  };
}

function fleetName(i: number): string {
  return `agent-${String(i).padStart(5, '0')}`;
}

/**
 * Writes the fleet as agent modules (`.mjs`, plain objects: `defineAgent` returns its argument
 * unchanged, so they need no import) into a temp directory for a real scheduler process.
 */
export function writeFleetDir(count: number): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'werkpilot-bench-agents-'));
  for (let i = 0; i < count; i += 1) {
    const { run: _run, ...fields } = fleetAgent(i);
    writeFileSync(path.join(dir, `${fleetName(i)}.mjs`), `export default { ...${JSON.stringify(fields)}, async run() { return null; } };\n`);
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
