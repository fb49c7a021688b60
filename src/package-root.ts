/**
 * The vhdcrypt package root (package.json, native/, build/), found from this
 * module's location, so it works from src/ under vitest and from dist/src/.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** undefined: not looked yet; null: looked, not found. */
let cached: string | null | undefined;

function isVhdcryptManifest(manifest: string): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8'));
  } catch (e) {
    // A malformed package.json of some enclosing directory is not ours: keep looking upward.
    if (e instanceof SyntaxError) return false;
    throw e;
  }
  return typeof parsed === 'object' && parsed !== null && (parsed as { name?: unknown }).name === 'vhdcrypt';
}

/** The nearest directory above this module whose package.json names vhdcrypt; undefined when there is none. */
export function findPackageRoot(): string | undefined {
  if (cached !== undefined) return cached ?? undefined;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && isVhdcryptManifest(join(dir, 'package.json'))) return (cached = dir);
    const up = dirname(dir);
    if (up === dir) {
      cached = null;
      return undefined;
    }
    dir = up;
  }
}

/**
 * Absolute path of a file `npm run build` makes under dist/ (worker and child-process entry files), or undefined
 * when the package root cannot be found. Not relative to import.meta.url: the CLI runs from a bundle in dist/cli.
 */
export function builtPath(...segments: string[]): string | undefined {
  const root = findPackageRoot();
  return root === undefined ? undefined : join(root, 'dist', ...segments);
}

/** builtPath of a module compiled by tsc (dist/src). */
export function compiledModulePath(...segments: string[]): string | undefined {
  return builtPath('src', ...segments);
}

/** Absolute path of the built native addon (node-gyp's build/Release), or undefined when the package root cannot be found. */
export function nativeAddonPath(): string | undefined {
  const root = findPackageRoot();
  return root === undefined ? undefined : join(root, 'build', 'Release', 'vhdcrypt_native.node');
}
