#!/usr/bin/env node
// The CLI entry: the bundle that `npm run build` makes of the compiled TypeScript (rolldown.config.mjs), which
// starts faster; tsc's output in dist/src when only that was built.
const { main } = await import('../dist/cli/main.js').catch((e) => {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !String(e.message).includes('dist/cli/main.js')) throw e;
  return import('../dist/src/cli/main.js');
});

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 70; },
);
