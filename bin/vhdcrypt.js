#!/usr/bin/env node
// The CLI entry: the compiled TypeScript lives in dist/ (npm run build).
import { main } from '../dist/src/cli/main.js';

main(process.argv).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(err); process.exitCode = 70; },
);
