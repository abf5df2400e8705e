import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT, WERKPILOT_BIN, useTestRedis } from '@werkpilot/test-support';
import { call, startHttpHarness, type Harness } from './_http-harness.js';

const redis = useTestRedis();
const harnesses: Harness[] = [];
afterEach(async () => {
  while (harnesses.length > 0) await harnesses.pop()!.close();
});

const readJson = (file: string) => JSON.parse(readFileSync(path.join(REPO_ROOT, file), 'utf8')) as { version?: string };
const VERSION = readJson('package.json').version;
const WORKSPACE_PACKAGES = ['apps/cli', 'apps/scheduler', 'apps/worker', 'packages/shared', 'packages/test-support', 'examples', 'bench'];

describe('one version everywhere', () => {
  it('the root package.json has a semver version and every workspace package carries it', () => {
    expect(VERSION).toMatch(/^\d+\.\d+\.\d+$/);
    for (const dir of WORKSPACE_PACKAGES) expect({ dir, version: readJson(`${dir}/package.json`).version }).toEqual({ dir, version: VERSION });
  });

  it('werkpilot --version prints it', () => {
    expect(execFileSync(WERKPILOT_BIN, ['--version'], { encoding: 'utf8' })).toBe(`${VERSION}\n`);
  });

  it('/api/metrics and /metrics (werkpilot_build_info) show it', async () => {
    const h = await startHttpHarness(redis);
    harnesses.push(h);
    const json = await call(h.url, '/api/metrics');
    expect(json.status).toBe(200);
    expect(json.body.version).toBe(VERSION);
    const text = await call(h.url, '/metrics', { headers: { accept: 'text/plain' } });
    expect(text.text.split('\n').filter((line) => line.startsWith('werkpilot_build_info'))).toEqual([`werkpilot_build_info{version="${VERSION}"} 1`]);
  });

  it("the image's OCI version label defaults to it", () => {
    const dockerfile = readFileSync(path.join(REPO_ROOT, 'deploy', 'Dockerfile'), 'utf8');
    expect(dockerfile.match(/^ARG WERKPILOT_VERSION=(.*)$/m)?.[1]).toBe(VERSION);
    expect(dockerfile).toMatch(/org\.opencontainers\.image\.version="\$\{WERKPILOT_VERSION\}"/);
  });
});
