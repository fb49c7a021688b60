// Build step: dist/man/vhdcrypt.1 from the compiled CLI's command tree (npm installs it with the package: "man").
import { mkdirSync, writeFileSync } from 'node:fs';
import { buildProgram } from '../dist/src/cli/main.js';
import { renderManPage } from '../dist/src/cli/man-page.js';
import { packageVersion } from '../dist/src/version.js';

const out = new URL('../dist/man/', import.meta.url);
mkdirSync(out, { recursive: true });
writeFileSync(new URL('vhdcrypt.1', out), renderManPage(buildProgram(), packageVersion()));
