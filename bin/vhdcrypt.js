#!/usr/bin/env node
// The CLI entry: the CommonJS bundle that `npm run build` makes of the compiled TypeScript (rolldown.config.mjs),
// which starts faster; tsc's output in dist/src when only that was built.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
let loaded;
try {
  try {
    // V8's code cache for the bundle (src/cli/compile-cache.ts); an optimisation, so nothing in it may stop the run.
    try {
      require('../dist/cli/compile-cache.cjs').enableCompileCache(fileURLToPath(new URL('../dist/cli/', import.meta.url)));
    } catch {}
    loaded = require('../dist/cli/main.cjs');
  } catch (e) {
    if (e?.code !== 'MODULE_NOT_FOUND' || !String(e.message).includes('dist/cli/main.cjs')) throw e;
    loaded = await import('../dist/src/cli/main.js');
  }
} catch (e) {
  // Out of file descriptors or memory before the CLI could load (its own mapping lives in main.js, resourceErrorCode).
  // Node 24's module loader reports a dependency's package.json it could not read as ERR_INVALID_PACKAGE_CONFIG,
  // naming the errno only in libuv's words.
  const uvText = { 'too many open files': 'EMFILE', 'file table overflow': 'ENFILE', 'not enough memory': 'ENOMEM', 'resource temporarily unavailable': 'EAGAIN' };
  const code = ['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN'].includes(e?.code)
    ? e.code
    : e?.code === 'ERR_INVALID_PACKAGE_CONFIG'
      ? Object.entries(uvText).find(([text]) => String(e.message).includes(text))?.[1]
      : undefined;
  if (code !== undefined) {
    process.stderr.write(`vhdcrypt: ${code}: a system resource ran out while loading (${e.message}); raise the limit (ulimit -n) and retry\n`);
    process.exit(1);
  }
  throw e;
}

// The run is over once main settles (servers settle when they have stopped): exit then, once standard output and
// error have taken what was written, rather than wait for Node to tear down the heap and the thread pool first.
const exitWith = (code) => {
  process.exitCode = code;
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
};
loaded.main(process.argv).then(exitWith, (err) => {
  console.error(err);
  exitWith(70);
});
