/**
 * What the CLI gives a shell: --version, a bash completion script that bash itself runs, and a man page that
 * man(1) renders, each generated from the same command tree as --help.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildProgram, COMMAND_PARTS } from '../src/cli/main.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.cjs');
const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function complete(words: string[]): string[] {
  const script = `source <("${process.execPath}" "${CLI}" completion bash)
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _vhdcrypt; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('the CLI in a shell', () => {
  it('a run builds only the part its command names; each part registers exactly the names listed for it, and all of them the whole CLI', () => {
    const topLevel = (command?: string) => buildProgram(command).commands.map((c) => c.name()).sort();
    const listed = COMMAND_PARTS.flatMap((p) => p.names);
    expect(topLevel()).toEqual([...listed, 'completion'].sort());
    for (const part of COMMAND_PARTS) {
      for (const name of part.names) expect(topLevel(name), name).toEqual([...part.names, 'completion'].sort());
    }
    // Help, completion and unknown words get every command (commander suggests from them).
    expect(topLevel('completion')).toEqual(topLevel());
    expect(topLevel('encrpyt')).toEqual(topLevel());
    const r = spawnSync(process.execPath, [CLI, 'encrpyt'], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining("Did you mean encrypt?")]);
  });

  it('--version prints the package version', () => {
    const r = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' });
    expect([r.status, r.stdout.trim()]).toEqual([0, version]);
  });

  it('bash completes commands, subcommands and options by position', () => {
    expect(complete(['vhdcrypt', 'enc'])).toEqual(['encrypt']);
    expect(complete(['vhdcrypt', 'vault', 'se'])).toEqual(['secret', 'serve', 'set-property']);
    expect(complete(['vhdcrypt', 'vault', 'secret', 'set', '--na'])).toEqual(['--name']);
    expect(complete(['vhdcrypt', 'decrypt', '--pass'])).toEqual(['--passphrase-file']);
    // Not a command word: nothing from us, so bash falls back to file names (-o default).
    expect(complete(['vhdcrypt', 'encrypt', 'disk'])).toEqual([]);
    const bad = spawnSync(process.execPath, [CLI, 'completion', 'fish'], { encoding: 'utf8' });
    expect([bad.status, bad.stderr.trim()]).toEqual([2, 'vhdcrypt: CLI_USAGE: completion: expected bash or zsh, not "fish"']);
  });

  it('zsh gets the same function through bashcompinit', () => {
    const r = spawnSync(process.execPath, [CLI, 'completion', 'zsh'], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/^# zsh completion/);
    expect(r.stdout).toContain('bashcompinit');
    expect(r.stdout).toContain('complete -o default -F _vhdcrypt vhdcrypt');
  });

  it('the build makes a man page that man renders, with every command', () => {
    const r = spawnSync('man', ['-l', join(ROOT, 'dist', 'man', 'vhdcrypt.1')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '200', MAN_KEEP_FORMATTING: '0' } });
    expect(r.status, r.stderr).toBe(0);
    const text = r.stdout.replace(/.\x08/g, '');
    expect(text).toContain(`vhdcrypt ${version}`);
    for (const c of ['encrypt [options] <src> <dst>', 'vault secret set', 'serve', 'completion', '--passphrase-file']) expect(text).toContain(c);
  });

  it('info prints keyslots, tokens and header problems as readable lines; keyslot list names priorities the same way', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-info-'));
    try {
      const env = { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') };
      const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
      const src = join(dir, 'src.raw');
      writeFileSync(src, Buffer.alloc(4 << 20, 7));
      const pass = join(dir, 'pass');
      writeFileSync(pass, 'pass one');
      const enc = join(dir, 'enc.raw');
      expect(cli('vault', 'init').status).toBe(0);
      const e = cli('encrypt', src, enc, '--add-recovery-passphrase', pass);
      expect(e.status, e.stderr).toBe(0);
      const info = cli('info', enc);
      expect(info.status, info.stderr).toBe(0);
      expect(info.stdout).toMatch(/^ {2}keyslot 0: pbkdf2-sha256, 1000 iterations; 512-bit key; priority normal$/m);
      expect(info.stdout).toMatch(/^ {2}keyslot 1: argon2id, time \d+, \d+ KiB, \d+ threads; 512-bit key; priority normal$/m);
      expect(info.stdout).toMatch(/^ {2}token 0: vhdcrypt-vault, keyslots 0; secret file:\S+; vault file:\S+$/m);
      expect(info.stdout).not.toMatch(/[{}]/);
      expect(cli('keyslot', 'list', enc).stdout).toMatch(/^ {2}keyslot 1: argon2id, priority normal$/m);
      // Damage the primary LUKS2 header's JSON: the secondary copy is used and the problem shown.
      const fd = openSync(enc, 'r+');
      writeSync(fd, Buffer.from('garbage'), 0, 7, 4096 + 100);
      closeSync(fd);
      const damaged = cli('info', enc);
      expect(damaged.status, damaged.stderr).toBe(0);
      expect(damaged.stdout).toMatch(/^ {2}header problem: .+/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
