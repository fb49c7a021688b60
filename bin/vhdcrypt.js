#!/usr/bin/env node
// The CLI entry: the bundle that `npm run build` makes of the compiled TypeScript (rolldown.config.mjs), which
// starts faster; tsc's output in dist/src when only that was built.
let loaded;
try {
  loaded = await import('../dist/cli/main.js').catch((e) => {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('dist/cli/main.js')) throw e;
    return import('../dist/src/cli/main.js');
  });
} catch (e) {
  // Out of file descriptors or memory before the CLI could load (its own mapping lives in main.js).
  if (['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN'].includes(e?.code)) {
    process.stderr.write(`vhdcrypt: ${e.code}: a system resource ran out while loading (${e.message}); raise the limit (ulimit -n) and retry\n`);
    process.exit(1);
  }
  throw e;
}

loaded.main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 70; },
);
