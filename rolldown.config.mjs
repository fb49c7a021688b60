import { isBuiltin } from 'node:module';
import { minifySync } from 'rolldown/utils';
// Bundles of tsc's output in dist/src, for start-up time: Node 20 spends ~1 ms per module resolving, reading and
// compiling it, and a file job loaded about a hundred. Packages stay in node_modules (native addons among them).
//  - dist/cli: the CLI (plus chunks for commands loaded on demand), CommonJS;
//  - dist/worker: the XTS pool's worker, which every job starts on each core while the key is unlocked.
// The library (src/index.ts) runs from dist/src.
const external = [/^node:/, /^[^./]/];
// commander (pure JS, loaded by every CLI run) goes into the CLI bundle: saves its CommonJS load (~10 ms). So do
// the Azure SDKs (a chunk loaded only for an https: vault): a few hundred modules, ~1 s to resolve and load apart.
// A bundled package brings the packages it imports along (the SDKs' jsonwebtoken, semver, proxy agents, debug:
// ~60 CommonJS modules, ~40 ms of CPU to resolve and load one by one); Node's built-ins stay external.
const bundledRoots = /^(commander$|@azure\/|@azure-rest\/|@typespec\/ts-http-runtime)/;
const cliExternal = (id, importer) => {
  if (id.startsWith('node:') || isBuiltin(id)) return true;
  if (/^[./]/.test(id) || id.startsWith('\0')) return false;
  if (bundledRoots.test(id)) return false;
  return !(importer && /[\\/]node_modules[\\/]/.test(importer));
};
// The packages bundled into the CLI are parsed and compiled by every run that loads their chunk (the Azure SDKs:
// ~1.2 MB of source for an https: vault). Their local names shortened and whitespace and comments dropped, V8
// has ~40% less to scan (~10 ms less CPU per https: run); no compression (which could change what code does),
// top-level names and function and class names kept (errors and logs name them). ASCII only (non-ASCII written as
// escapes): V8 keeps an all-ASCII source in one byte per character, half the memory. The project's own code stays
// as written.
const minifyPackages = {
  name: 'vhdcrypt-minify-packages',
  transform: {
    filter: { id: /[\\/]node_modules[\\/]/ },
    handler(code, id) {
      const r = minifySync(id, code, { compress: false, mangle: { toplevel: false, keepNames: true }, codegen: { removeWhitespace: true, asciiOnly: true }, sourcemap: true });
      if (r.errors.length > 0) this.error(`minify ${id}: ${r.errors[0].message}`);
      return { code: r.code, map: r.map };
    },
  },
};
// The project's own code as ASCII too, and without its doc comments (the source maps lead back to them): one
// non-ASCII character (a "§" in a comment) makes V8 hold a whole file as two bytes per character and Node decode it
// from UTF-8 on every run; the comments are a third of what each run reads and scans.
// commander requires node:child_process (which loads net and dgram: ~5 ms of every run) for executable
// subcommands, which vhdcrypt has none of: it gets the module when it first spawns one instead.
const lazyCommanderChildProcess = {
  name: 'vhdcrypt-lazy-commander-child-process',
  transform: {
    filter: { id: /[\\/]commander[\\/]lib[\\/]command\.js$/ },
    handler(code, id) {
      const eager = "const childProcess = require('node:child_process');";
      if (!code.includes(eager)) this.error(`${id}: commander no longer requires node:child_process as expected; review this plugin`);
      return { code: code.replace(eager, "const childProcess = { spawn: (...args) => require('node:child_process').spawn(...args) };"), map: null };
    },
  },
};
const output = (dir) => ({ dir, format: 'esm', sourcemap: true, cleanDir: true, charset: 'ascii', comments: { legal: true, annotation: true, jsdoc: false } });
// The CLI as CommonJS (.cjs, the package being "type": "module"): Node 20 resolves, links and evaluates an ES module
// graph at ~1 ms per module more than require() does the same files (a 16 MiB encrypt: 0.23 -> 0.21 s wall). Its
// dynamic imports become require() calls behind a promise; the code has no top-level await.
// External packages loaded on demand are require()d too (dynamicImportInCjs: false; each of them loads as CommonJS):
// a script compiled from V8's code cache has no import() (src/cli/compile-cache.ts).
const cliOutput = { ...output('dist/cli'), format: 'cjs', entryFileNames: '[name].cjs', chunkFileNames: '[name]-[hash].cjs', dynamicImportInCjs: false };
export default [
  { input: { main: 'dist/src/cli/main.js', 'compile-cache': 'dist/src/cli/compile-cache.js' }, platform: 'node', external: cliExternal, plugins: [lazyCommanderChildProcess, minifyPackages], output: cliOutput },
  { input: { 'xts-worker': 'dist/src/engine/pool/xts-worker.js' }, platform: 'node', external, output: output('dist/worker') },
];
