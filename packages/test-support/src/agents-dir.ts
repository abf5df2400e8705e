import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';

/** The repository root (so agent files resolve `@werkpilot/shared` through the root node_modules). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/**
 * Writes agent modules into a fresh directory inside the repository (under `.data/`, ignored by
 * git) and removes it after the file's tests. `files` maps file names to their source.
 */
export function writeAgentsDir(files: Record<string, string>): string {
  const dir = path.join(REPO_ROOT, '.data', 'test-agents', randomBytes(6).toString('hex'));
  mkdirSync(dir, { recursive: true });
  for (const [name, source] of Object.entries(files)) writeFileSync(path.join(dir, name), source);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Source of a simple agent module, for tests: `agentSource({ name: 'a', ... }, 'return 1')`. */
export function agentSource(fields: Record<string, unknown>, runBody = 'return null;', extra = ''): string {
  return `import { defineAgent } from '@werkpilot/shared';
export default defineAgent({
  ...${JSON.stringify(fields)},
  async run(ctx) { ${runBody} },
  ${extra}
});
`;
}
