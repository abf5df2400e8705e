import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@werkpilot/test-support';

const SKIPPED_DIRS = new Set(['node_modules', 'dist', '.git', '.data', 'test-results']);
/** This file names the patterns it looks for. */
const THIS_FILE = path.join('packages', 'shared', 'test', 'design-links.test.ts');

/** Every .ts and .md file of the repository, relative to its root, outside build output and dependencies. */
function sourceFiles(dir = REPO_ROOT): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.isDirectory()) return SKIPPED_DIRS.has(entry.name) ? [] : sourceFiles(path.join(dir, entry.name));
    const file = path.relative(REPO_ROOT, path.join(dir, entry.name));
    return /\.(ts|md)$/.test(entry.name) && file !== THIS_FILE ? [file] : [];
  });
}

/** GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

const design = readFileSync(path.join(REPO_ROOT, 'docs', 'design.md'), 'utf8');
const anchors = new Set(
  design
    .replace(/```[\s\S]*?```/g, '')
    .split('\n')
    .filter((line) => /^#{1,6} /.test(line))
    .map((line) => anchorOf(line.replace(/^#+ /, ''))),
);

describe('links to docs/design.md', () => {
  it('every `docs/design.md#anchor` in the code and docs names a section that exists', () => {
    const links: string[] = [];
    for (const file of sourceFiles()) {
      const text = readFileSync(path.join(REPO_ROOT, file), 'utf8');
      // From other files: docs/design.md#x (code, README) or design.md#x (docs/); inside it: (#x).
      const pattern = file === path.join('docs', 'design.md') ? /\]\(#([\w-]+)\)/g : /design\.md#([\w-]+)/g;
      for (const match of text.matchAll(pattern)) links.push(`${file} → #${match[1]}`);
    }
    expect(links.length).toBeGreaterThan(10);
    expect(links.filter((link) => !anchors.has(link.slice(link.indexOf('#') + 1)))).toEqual([]);
  });

  it('no code comment cites the external DESIGN.md any more', () => {
    const citing = sourceFiles().filter((file) => file.endsWith('.ts') && readFileSync(path.join(REPO_ROOT, file), 'utf8').includes('DESIGN.md'));
    expect(citing).toEqual([]);
  });
});
