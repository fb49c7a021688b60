/**
 * V8's code cache for the CLI bundle (dist/cli): every run otherwise parses and compiles ~0.7 MB of JavaScript
 * before it does anything (~20 ms of a 16 MiB encrypt's 0.2 s); with the bytecode an earlier run left, V8 only
 * checks and deserializes it. Node 22.1+ does this itself (module.enableCompileCache, given our directory); on
 * Node 20 the CLI's own CommonJS files are compiled here with the cached data (vm.Script, as Node's loader does), and
 * what a run had to compile afresh is written back when it exits.
 *
 * Bytecode V8 accepts runs as code, so the cache lives only in a directory of this user's that nobody else can
 * write: $XDG_CACHE_HOME/vhdcrypt (else ~/.cache/vhdcrypt), made 0700, skipped when it is not owned by this user or
 * is writable by group or others. A file's cache is named by the SHA-256 of its source (V8 itself checks only the
 * source's length, its own version and flags); a run that writes the cache removes files unused for 30 days (an
 * older build's). NODE_DISABLE_COMPILE_CACHE=1 turns it off, as it does Node's. The
 * cache is an optimisation: anything that goes wrong with it is ignored and the file compiles as usual.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import Module from 'node:module';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, sep } from 'node:path';
import vm from 'node:vm';
import { writeFileAtomic } from './atomic-file.js';

/** The cache directory of this user, made if missing, or null where it cannot be trusted or made. */
export function compileCacheDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.NODE_DISABLE_COMPILE_CACHE === '1') return null;
  const xdg = env.XDG_CACHE_HOME;
  let base: string;
  try {
    base = xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), '.cache');
  } catch {
    return null;
  }
  const dir = join(base, 'vhdcrypt');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return privateDir(dir) ? dir : null;
  } catch {
    return null;
  }
}

/** A real directory (not a link) owned by this user that only it can write. */
function privateDir(path: string): boolean {
  const st = lstatSync(path);
  const uid = process.getuid?.();
  return st.isDirectory() && (uid === undefined || st.uid === uid) && (st.mode & 0o022) === 0;
}

/** Turn the cache on for the CommonJS files under `bundleDir` (and, on Node 22.1+, for every module Node loads). */
export function enableCompileCache(bundleDir: string): void {
  const dir = compileCacheDir();
  if (dir === null) return;
  const nodeCache = (Module as { enableCompileCache?: (d: string) => unknown }).enableCompileCache;
  if (nodeCache !== undefined) {
    try {
      nodeCache(join(dir, 'node'));
    } catch {
      // An optimisation only.
    }
    return;
  }
  const v8Dir = join(dir, `v8-${process.versions.v8}-${process.arch}`);
  try {
    mkdirSync(v8Dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return;
  }
  try {
    if (!privateDir(v8Dir)) return;
  } catch {
    return;
  }
  hookCommonJs(bundleDir.endsWith(sep) ? bundleDir : bundleDir + sep, v8Dir);
}

interface Pending {
  readonly script: vm.Script;
  readonly file: string;
}

type CompileFn = (this: Module, content: string, filename: string) => unknown;

function hookCommonJs(bundleDir: string, v8Dir: string): void {
  const proto = Module.prototype as unknown as { _compile: CompileFn; require(id: string): unknown };
  const compile = proto._compile;
  const fresh: Pending[] = [];
  proto._compile = function (this: Module, content: string, filename: string) {
    if (!filename.startsWith(bundleDir) || !filename.endsWith('.cjs')) return compile.call(this, content, filename);
    const file = join(v8Dir, `${createHash('sha256').update(content).digest('hex').slice(0, 40)}.v8`);
    let cachedData: Buffer | undefined;
    try {
      cachedData = readFileSync(file);
    } catch {
      cachedData = undefined;
    }
    // The wrapper Node's loader puts around a CommonJS file, with the same five names in scope. No import() callback:
    // V8 drops it from a script made from cached data, and the bundle has no import() (rolldown.config.mjs).
    const script = new vm.Script(Module.wrap(content), { filename, ...(cachedData ? { cachedData } : {}) });
    if (cachedData === undefined || script.cachedDataRejected === true) fresh.push({ script, file });
    const fn = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => unknown;
    const mod = this as Module & { exports: unknown };
    const require = Object.assign((id: string) => proto.require.call(mod, id), {
      resolve: (request: string, options?: { paths?: string[] }) => (Module as unknown as { _resolveFilename(r: string, m: Module, isMain: boolean, o?: unknown): string })._resolveFilename(request, mod, false, options),
      main: (process as { mainModule?: unknown }).mainModule,
      cache: (Module as unknown as { _cache: unknown })._cache,
    });
    return fn.call(mod.exports, mod.exports, require, mod, filename, dirname(filename));
  };
  // Written once the run is over, so the cache holds the functions the run compiled, not only the top level. A run
  // that writes is the first of a new build: what older builds left is cleared then.
  process.once('exit', () => {
    if (fresh.length === 0) return;
    for (const { script, file } of fresh) writeCache(file, script);
    removeStale(v8Dir, Date.now());
  });
}

/** How long a cache file may go unread (nor written) before a run that writes the cache removes it. */
const STALE_MS = 30 * 24 * 3600 * 1000;

/** Remove the files of `dir` unused for STALE_MS: the caches of builds no longer run, a temp file a crash left. */
function removeStale(dir: string, now: number): void {
  try {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const st = lstatSync(path);
      // atime is "relatime" on most mounts (updated at most daily): a file read every day stays.
      if (st.isFile() && now - Math.max(st.atimeMs, st.mtimeMs) > STALE_MS) rmSync(path, { force: true });
    }
  } catch {
    // An optimisation only.
  }
}

/** Write a script's cache in place atomically (atomic-file.ts); failures are ignored. */
function writeCache(file: string, script: vm.Script): void {
  try {
    writeFileAtomic(file, script.createCachedData());
  } catch {
    // An optimisation only: the next run compiles afresh.
  }
}
