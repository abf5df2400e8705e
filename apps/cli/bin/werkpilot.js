#!/usr/bin/env node
// The `werkpilot` bin: runs the CLI's TypeScript source through tsx (a dependency of @werkpilot/cli),
// so the same source serves `pnpm werkpilot`, this bin and the container image.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
