// pnpm hook: adjusts third-party manifests as they are resolved.
module.exports = {
  hooks: {
    readPackage(pkg) {
      // valibot (through @bull-board/api) lists TypeScript as an optional peer for its types only;
      // pnpm would link the workspace's TypeScript into it, and the production image would ship
      // 23 MB of compiler. Nothing runs TypeScript at run time.
      if (pkg.name === 'valibot' && pkg.peerDependencies) {
        delete pkg.peerDependencies.typescript;
        if (pkg.peerDependenciesMeta) delete pkg.peerDependenciesMeta.typescript;
      }
      return pkg;
    },
  },
};
