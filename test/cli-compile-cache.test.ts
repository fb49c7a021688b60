/**
 * V8's code cache for the CLI bundle (src/cli/compile-cache.ts), through the CLI as a user runs it, with
 * XDG_CACHE_HOME pointing at a directory of the test's own: a first run leaves the cache, a second compiles from it
 * (strace: it reads every cache file and writes none, which it would for one V8 rejected), a damaged file is
 * replaced, and a directory others can write, a link, or NODE_DISABLE_COMPILE_CACHE=1 means no cache at all.
 * On Node 22.1+ the cache is Node's own (module.enableCompileCache) in the same private directory.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeDir, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin/vhdcrypt.cjs');
const nodeOwn = typeof ((await import('node:module')).default as { enableCompileCache?: unknown }).enableCompileCache === 'function';
let dir: string;

beforeAll(() => {
  dir = tempDir('compile-cache');
});
afterAll(() => removeDir(dir));

function run(cacheHome: string, args: string[] = ['--version'], extraEnv: NodeJS.ProcessEnv = {}, trace?: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, XDG_CACHE_HOME: cacheHome };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  Object.assign(env, extraEnv);
  const cmd = trace === undefined ? [process.execPath, CLI, ...args] : ['strace', '-f', '-qq', '-e', 'trace=openat,rename', '-e', 'signal=none', '-o', trace, process.execPath, CLI, ...args];
  const r = spawnSync(cmd[0]!, cmd.slice(1), { env, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

/** Every file under `root`, relative, sorted. */
function files(root: string): string[] {
  if (!existsSync(root)) return [];
  return (readdirSync(root, { recursive: true, withFileTypes: true }) as Array<{ isFile(): boolean; parentPath: string; name: string }>)
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(root.length + 1))
    .sort();
}

/** A cache home of its own (XDG_CACHE_HOME) with one run of the CLI done in it; its vhdcrypt directory. */
function usedHome(name: string): { home: string; cache: string } {
  const home = join(dir, name);
  mkdirSync(home);
  run(home);
  return { home, cache: join(home, 'vhdcrypt') };
}

describe('the CLI bundle compiles from V8\'s code cache', () => {
  it('has no import() for a script compiled from cached data to need (rolldown dynamicImportInCjs: false)', () => {
    const bundle = join(ROOT, 'dist/cli');
    const withImport = readdirSync(bundle).filter((f) => f.endsWith('.cjs') && /(^|[^\w$.])import\(/.test(readFileSync(join(bundle, f), 'utf8')));
    expect(withImport).toEqual([]);
  });

  it('the CLI and worker bundles are ASCII only: one other character would make V8 hold a whole file at two bytes a character', () => {
    const files = [
      ...readdirSync(join(ROOT, 'dist/cli')).filter((f) => f.endsWith('.cjs')).map((f) => join(ROOT, 'dist/cli', f)),
      ...readdirSync(join(ROOT, 'dist/worker')).filter((f) => f.endsWith('.js')).map((f) => join(ROOT, 'dist/worker', f)),
    ];
    expect(files.length).toBeGreaterThan(5);
    expect(files.filter((f) => readFileSync(f).some((b) => b > 0x7f))).toEqual([]);
  });

  it('a first run writes the cache into a 0700 directory; a second reads every file of it and writes none', () => {
    const home = join(dir, 'home1');
    mkdirSync(home);
    expect(run(home).trim()).toMatch(/^\d+\.\d+\.\d+/);
    const cache = join(home, 'vhdcrypt');
    expect(statSync(cache).mode & 0o777).toBe(0o700);
    const written = files(cache);
    expect(written.length).toBeGreaterThanOrEqual(5);
    if (nodeOwn) {
      expect(written.every((f) => f.startsWith('node/'))).toBe(true);
      return;
    }
    expect(written.every((f) => /^v8-[^/]+\/[0-9a-f]{40}\.v8$/.test(f))).toBe(true);
    for (const f of written) expect(statSync(join(cache, f)).mode & 0o777).toBe(0o600);
    const before = written.map((f) => readFileSync(join(cache, f)));
    const trace = join(dir, 'second.trace');
    run(home, ['--version'], {}, trace);
    const lines = readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes(cache));
    const opened = new Set(lines.filter((l) => /openat\(.*O_RDONLY.*= \d+$/.test(l)).map((l) => /"([^"]+)"/.exec(l)![1]!.slice(cache.length + 1)));
    expect([...opened].sort()).toEqual(written);
    expect(lines.filter((l) => /O_CREAT|rename\(/.test(l))).toEqual([]);
    expect(files(cache)).toEqual(written);
    written.forEach((f, i) => expect(readFileSync(join(cache, f)).equals(before[i]!)).toBe(true));
  });

  it('a damaged cache file is rejected by V8 and written again; the run is not affected', (ctx) => {
    if (nodeOwn) ctx.skip(); // Node's own cache checks its files itself
    const { home, cache } = usedHome('home2');
    const biggest = files(cache).sort((a, b) => statSync(join(cache, b)).size - statSync(join(cache, a)).size)[0]!;
    const good = readFileSync(join(cache, biggest));
    writeFileSync(join(cache, biggest), Buffer.alloc(good.length, 0x5a));
    expect(run(home, ['encrypt', '--help'])).toContain('Usage: vhdcrypt encrypt');
    const again = readFileSync(join(cache, biggest));
    expect(again.equals(Buffer.alloc(good.length, 0x5a))).toBe(false);
    expect(again.length).toBeGreaterThan(0);
  });

  it('a run that writes the cache removes what has gone unused for 30 days (an older build\'s), and keeps the rest', (ctx) => {
    if (nodeOwn) ctx.skip(); // Node's own cache keeps its own files
    const { home, cache } = usedHome('home6');
    const [v8Dir] = readdirSync(cache);
    const at = (name: string) => join(cache, v8Dir!, name);
    writeFileSync(at('0'.repeat(40) + '.v8'), 'an older build');
    const old = new Date(Date.now() - 40 * 24 * 3600 * 1000);
    utimesSync(at('0'.repeat(40) + '.v8'), old, old);
    writeFileSync(at('1'.repeat(40) + '.v8'), 'another command of this build');
    // No run writes, nothing is removed: a run that found every file in the cache leaves the old one.
    run(home);
    expect(existsSync(at('0'.repeat(40) + '.v8'))).toBe(true);
    // A run that writes (one of its files missing) removes it, and only it.
    const [some] = files(cache).filter((f) => !f.includes('0000') && !f.includes('1111'));
    rmSync(join(cache, some!));
    run(home);
    expect(existsSync(at('0'.repeat(40) + '.v8'))).toBe(false);
    expect(existsSync(at('1'.repeat(40) + '.v8'))).toBe(true);
    expect(existsSync(join(cache, some!))).toBe(true);
  });

  it('a cache directory others can write, or a link in its place, is neither read nor written', () => {
    const { home, cache } = usedHome('home3');
    const kept = files(cache);
    chmodSync(cache, 0o777);
    for (const f of kept) rmSync(join(cache, f));
    const trace = join(dir, 'open.trace');
    run(home, ['--version'], {}, trace);
    expect(readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes(`${cache}/`))).toEqual([]);
    expect(files(cache)).toEqual([]);

    const linked = join(dir, 'home4');
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(linked);
    mkdirSync(elsewhere, { mode: 0o700 });
    symlinkSync(elsewhere, join(linked, 'vhdcrypt'));
    run(linked);
    expect(files(elsewhere)).toEqual([]);
  });

  it('NODE_DISABLE_COMPILE_CACHE=1 turns it off, as it does Node\'s', () => {
    const home = join(dir, 'home5');
    mkdirSync(home);
    run(home, ['--version'], { NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(files(home)).toEqual([]);
  });
});
