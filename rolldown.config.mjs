// The CLI as one ES module (plus chunks for commands loaded on demand) built from tsc's output in dist/src:
// Node 20 spends ~1 ms per module resolving, reading and compiling, and a file job loads about a hundred.
// Packages stay in node_modules (native addons among them); workers and child processes still run from
// dist/src (src/package-root.ts compiledModulePath), as does the library (src/index.ts).
export default {
  input: { main: 'dist/src/cli/main.js' },
  platform: 'node',
  external: [/^node:/, /^[^./]/],
  output: { dir: 'dist/cli', format: 'esm', sourcemap: true, cleanDir: true },
};
