/** vhdcrypt's version, from the package's own package.json (found from the package root, so bundles read it too). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findPackageRoot } from './package-root.js';

let cached: string | undefined;

/** The package version, or 'unknown' when the package root cannot be found. */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  const root = findPackageRoot();
  const manifest = root === undefined ? null : (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: unknown });
  cached = typeof manifest?.version === 'string' ? manifest.version : 'unknown';
  return cached;
}
