/**
 * What lets a process import agent modules written in TypeScript.
 *
 * - Node 22.18+, 23.6+ and 24 (the image) strip types natively (`process.features.typescript`):
 *   nothing to do.
 * - A process that itself runs from TypeScript sources (`pnpm worker` under tsx, vitest) has a
 *   loader already.
 * - Otherwise (Node 20, or 22 before 22.18 without `--experimental-strip-types`) tsx is registered,
 *   once, and only when a `.ts` agent is there to load: the compiled processes run without a loader.
 *
 * Native stripping accepts only erasable syntax (no `enum`, `namespace` with code, parameter
 * properties) and imports must name the `.ts` file; docs/agents.md says so, and agents that follow
 * it load the same way under tsx.
 */
let registered: Promise<void> | undefined;

export function canImportTypeScript(): boolean {
  const features = process.features as { typescript?: string | false };
  return Boolean(features.typescript) || import.meta.url.endsWith('.ts');
}

/** Makes `.ts` agent modules importable in this process; resolves at once when they already are. */
export function enableTypeScriptAgents(): Promise<void> {
  if (canImportTypeScript()) return Promise.resolve();
  registered ??= import('tsx/esm/api').then(({ register }) => {
    register();
  });
  return registered;
}
