/**
 * What the CLI gives a shell: --version, a bash completion script that bash itself runs, and a man page that
 * man(1) renders, each generated from the same command tree as --help.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.js');
const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function complete(words: string[]): string[] {
  const script = `source <("${process.execPath}" "${CLI}" completion bash)
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _vhdcrypt; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('the CLI in a shell', () => {
  it('--version prints the package version', () => {
    const r = spawnSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' });
    expect([r.status, r.stdout.trim()]).toEqual([0, version]);
  });

  it('bash completes commands, subcommands and options by position', () => {
    expect(complete(['vhdcrypt', 'enc'])).toEqual(['encrypt']);
    expect(complete(['vhdcrypt', 'vault', 'se'])).toEqual(['secret', 'set-property']);
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
});
