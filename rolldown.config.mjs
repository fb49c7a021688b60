// Bundles of tsc's output in dist/src, for start-up time: Node 20 spends ~1 ms per module resolving, reading and
// compiling it, and a file job loaded about a hundred. Packages stay in node_modules (native addons among them).
//  - dist/cli: the CLI (plus chunks for commands loaded on demand);
//  - dist/worker: the XTS pool's worker, which every job starts on each core while the key is unlocked.
// The library (src/index.ts) runs from dist/src.
const external = [/^node:/, /^[^./]/];
// commander (pure JS, loaded by every CLI run) goes into the CLI bundle: saves its CommonJS load (~10 ms). So do
// the Azure SDKs (a chunk loaded only for an https: vault): a few hundred modules, ~1 s to resolve and load apart.
const cliExternal = [/^node:/, /^(?!commander$|@azure\/|@azure-rest\/|@typespec\/ts-http-runtime)[^./]/];
const output = (dir) => ({ dir, format: 'esm', sourcemap: true, cleanDir: true });
export default [
  { input: { main: 'dist/src/cli/main.js' }, platform: 'node', external: cliExternal, output: output('dist/cli') },
  { input: { 'xts-worker': 'dist/src/engine/pool/xts-worker.js' }, platform: 'node', external, output: output('dist/worker') },
];
