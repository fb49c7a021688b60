/**
 * Our images opened by other tools, with the commands the README gives: `--compat qemu` output read by QEMU's
 * luks driver over vpc, by nbdkit's luks filter, and by cryptsetup.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, openSync, readFileSync, readSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { firstDifference, makeRaw, oracleDecryptSector, removeDir, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.cjs');
const PASS = 'qemu reads this';
let dir: string;
let src: string;
let passFile: string;
let env: NodeJS.ProcessEnv;
let model: Uint8Array;

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
  model = makeRaw(raw, 24 << 20, [[0, 1 << 20], [9 << 20, 3 << 20]]);
  src = join(dir, 'src.vhd');
  ok('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, src]);
  passFile = join(dir, 'pass');
  writeFileSync(passFile, PASS);
  ok(process.execPath, [CLI, 'vault', 'init']);
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

describe('vault-sealed images opened with the key export (README "Opening our images with other tools")', () => {
  it('QEMU opens the VHD with the exported passphrase file; cryptsetup tests it on the extracted LUKS payload', () => {
    const enc = join(dir, 'v.vhd');
    ok(process.execPath, [CLI, 'encrypt', src, enc, '--compat', 'qemu']);
    const pass = join(dir, 'v.pass');
    ok(process.execPath, [CLI, 'key', 'export', enc, '--passphrase-file', pass]);
    const out = join(dir, 'v.out.raw');
    ok('qemu-img', ['convert', '--object', `secret,id=s,file=${pass}`, '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`, '-O', 'raw', out]);
    expect(ok('qemu-img', ['compare', '-f', 'vpc', src, '-F', 'raw', out])).toMatch(/identical/);
    const payload = join(dir, 'v.luks');
    ok('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', enc, payload]);
    ok('cryptsetup', ['open', '--test-passphrase', '--key-file', pass, payload]);
  });

  it('nbdkit and cryptsetup open a raw output with the exported passphrase; the volume key opens it and adds a keyslot', () => {
    const enc = join(dir, 'v2.luks');
    ok(process.execPath, [CLI, 'encrypt', src, enc, '--compat', 'qemu', '--out-format', 'raw']);
    const pass = join(dir, 'v2.pass');
    const key = join(dir, 'v2.key');
    ok(process.execPath, [CLI, 'key', 'export', enc, '--passphrase-file', pass, '--volume-key-file', key]);
    const out = join(dir, 'v2.out.raw');
    ok('nbdkit', ['-U', '-', '--filter=luks', 'file', enc, `passphrase=+${pass}`, '--run', `nbdcopy "$uri" ${out}`]);
    expect(ok('qemu-img', ['compare', '-f', 'vpc', src, '-F', 'raw', out])).toMatch(/identical/);
    ok('cryptsetup', ['open', '--test-passphrase', '--key-file', pass, enc]);
    ok('cryptsetup', ['open', '--test-passphrase', '--volume-key-file', key, enc]);

    // node:crypto as the oracle: the volume key decrypts the first payload sector (LUKS1 plain64, tweak 0).
    const volumeKey = new Uint8Array(readFileSync(key));
    expect(volumeKey.length).toBe(64);
    const offset = Number(/Payload offset:\s+(\d+)/.exec(ok('cryptsetup', ['luksDump', enc]))![1]) * 512;
    const sector = new Uint8Array(512);
    const fd = openSync(enc, 'r');
    try {
      expect(readSync(fd, sector, 0, 512, offset)).toBe(512);
    } finally {
      closeSync(fd);
    }
    expect(firstDifference(oracleDecryptSector(volumeKey, 0n, sector), model.subarray(0, 512))).toBe(-1);

    // A keyslot added with the volume key (no passphrase known) opens the image in vhdcrypt too.
    const copy = join(dir, 'v2-copy.luks');
    copyFileSync(enc, copy);
    const added = join(dir, 'added.pass');
    writeFileSync(added, 'a keyslot added by cryptsetup');
    ok('cryptsetup', ['luksAddKey', '--batch-mode', '--volume-key-file', key, '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', copy, added]);
    ok('cryptsetup', ['open', '--test-passphrase', '--key-file', added, copy]);
    const back = join(dir, 'v2-back.raw');
    ok(process.execPath, [CLI, 'decrypt', copy, back, '--passphrase-file', added]);
    expect(ok('qemu-img', ['compare', '-f', 'vpc', src, '-F', 'raw', back])).toMatch(/identical/);
  });
});
