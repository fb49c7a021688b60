/**
 * The vhdcrypt package root (package.json, native/, build/), found from this
 * module's location, so it works from src/ under vitest and from dist/src/.
 */
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
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

/**
 * require() of a package from the module at `from` (its import.meta.url): CommonJS's loader takes a package.json
 * or file it could not stat or read for one that is not there, so a process out of file descriptors gets
 * MODULE_NOT_FOUND (Node 24: ERR_INVALID_PACKAGE_CONFIG) for an installed package. When a descriptor cannot be opened right after, the failure is that
 * resource's (EMFILE, ENFILE), and is thrown as such (the CLI reports those by name); otherwise the loader's error
 * stands.
 */
export function requirePackage<T>(from: string, id: string): T {
  return duringLoad(id, () => createRequire(from)(id) as T);
}

/** require.resolve() of a package's file from the module at `from`, with requirePackage's reading of a failure. */
export function resolvePackage(from: string, id: string): string {
  return duringLoad(id, () => createRequire(from).resolve(id));
}

function duringLoad<T>(id: string, load: () => T): T {
  try {
    return load();
  } catch (e) {
    // Node 24 says ERR_INVALID_PACKAGE_CONFIG for a package.json it could not read.
    const code = (e as NodeJS.ErrnoException | null)?.code;
    if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_INVALID_PACKAGE_CONFIG') throw e;
    try {
      closeSync(openSync('/dev/null', 'r'));
    } catch (probe) {
      const shortage = (probe as NodeJS.ErrnoException | null)?.code;
      if (shortage === 'EMFILE' || shortage === 'ENFILE') {
        const first = String((e as Error).message).split('\n')[0];
        throw Object.assign(new Error(`${shortage}: could not load ${id} (${first})`), { code: shortage, cause: e });
      }
    }
    throw e;
  }
}
