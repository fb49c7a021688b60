/**
 * Our images opened by other tools, with the commands the README gives: `--compat qemu` output read by QEMU's
 * luks driver over vpc, by nbdkit's luks filter, and by cryptsetup.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeRaw, removeDir, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.js');
const PASS = 'qemu reads this';
let dir: string;
let src: string;
let passFile: string;
let env: NodeJS.ProcessEnv;

function run(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function ok(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  expect(r.status, `${cmd} ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(() => {
  dir = tempDir('tools-open');
  env = { ...process.env, PATH: `/usr/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`, VHDCRYPT_VAULT: join(dir, 'vault') };
  const raw = join(dir, 'src.raw');
  makeRaw(raw, 24 << 20, [[0, 1 << 20], [9 << 20, 3 << 20]]);
  src = join(dir, 'src.vhd');
  ok('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, src]);
  passFile = join(dir, 'pass');
  writeFileSync(passFile, PASS);
});
afterAll(() => removeDir(dir));

describe('--compat qemu', () => {
  it('QEMU reads the VHD through its luks driver over vpc, every block included', () => {
    const enc = join(dir, 'q.vhd');
    ok(process.execPath, [CLI, 'encrypt', src, enc, '--compat', 'qemu', '--passphrase-file', passFile]);
    expect(ok('qemu-img', ['info', '--output=json', '-f', 'vpc', enc])).toMatch(/"format": "vpc"/);
    const out = join(dir, 'q.raw');
    ok('qemu-img', ['convert', '--object', `secret,id=s,data=${PASS}`, '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`, '-O', 'raw', out]);
    expect(ok('qemu-img', ['compare', '-f', 'vpc', src, '-F', 'raw', out])).toMatch(/identical/);
  });

  it('nbdkit --filter=luks serves a raw output; cryptsetup accepts the passphrase', () => {
    const enc = join(dir, 'q.luks');
    ok(process.execPath, [CLI, 'encrypt', src, enc, '--compat', 'qemu', '--out-format', 'raw', '--passphrase-file', passFile]);
    const out = join(dir, 'n.raw');
    ok('nbdkit', ['-U', '-', '--filter=luks', 'file', enc, `passphrase=${PASS}`, '--run', `nbdcopy "$uri" ${out}`]);
    expect(ok('qemu-img', ['compare', '-f', 'vpc', src, '-F', 'raw', out])).toMatch(/identical/);
    expect(ok('cryptsetup', ['luksDump', enc])).toMatch(/Version:\s+1/);
    ok('cryptsetup', ['open', '--test-passphrase', '--key-file', passFile, enc]);
  });

  it('cannot be combined with the options it sets', () => {
    for (const extra of [['--format', 'luks2'], ['--sector-size', '4096'], ['--no-sparse']]) {
      const r = run(process.execPath, [CLI, 'encrypt', src, join(dir, 'x.vhd'), '--compat', 'qemu', '--passphrase-file', passFile, ...extra]);
      expect([extra[0], r.status]).toEqual([extra[0], 2]);
      expect(r.stderr).toMatch(/--compat <tool>' cannot be used with/);
    }
  });
});
