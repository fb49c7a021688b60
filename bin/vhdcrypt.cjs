#!/usr/bin/env node
'use strict';
// The CLI entry, CommonJS so that Node does not start its ES module loader for it (~8 ms of every run): the
// CommonJS bundle that `npm run build` makes of the compiled TypeScript (rolldown.config.mjs); tsc's output in
// dist/src when only that was built.
const { join } = require('node:path');

// Out of file descriptors or memory before the CLI could load (its own mapping lives in main.js, resourceErrorCode).
// Node 24's module loader reports a dependency's package.json it could not read as ERR_INVALID_PACKAGE_CONFIG,
// naming the errno only in libuv's words.
function resourceCode(e) {
  const uvText = { 'too many open files': 'EMFILE', 'file table overflow': 'ENFILE', 'not enough memory': 'ENOMEM', 'resource temporarily unavailable': 'EAGAIN' };
  if (['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN'].includes(e?.code)) return e.code;
  if (e?.code === 'ERR_INVALID_PACKAGE_CONFIG') return Object.entries(uvText).find(([text]) => String(e.message).includes(text))?.[1];
  return undefined;
}

async function load() {
  try {
    // V8's code cache for the bundle (src/cli/compile-cache.ts); an optimisation, so nothing in it may stop the run.
    try {
      require('../dist/cli/compile-cache.cjs').enableCompileCache(join(__dirname, '..', 'dist', 'cli'));
    } catch {}
    return require('../dist/cli/main.cjs');
  } catch (e) {
    if (e?.code !== 'MODULE_NOT_FOUND' || !String(e.message).includes('dist/cli/main.cjs')) throw e;
    return import('../dist/src/cli/main.js');
  }
}

// The run is over once main settles (servers settle when they have stopped): exit then, once standard output and
// error have taken what was written, rather than wait for Node to tear down the heap and the thread pool first.
const exitWith = (code) => {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
};

load().then(
  (loaded) =>
    loaded.main(process.argv).then(exitWith, (err) => {
      console.error(err);
      exitWith(70);
    }),
  (e) => {
    const code = resourceCode(e);
    if (code === undefined) throw e;
    process.stderr.write(`vhdcrypt: ${code}: a system resource ran out while loading (${e.message}); raise the limit (ulimit -n) and retry\n`);
    process.exit(1);
  },
);
