/**
 * BitLocker volumes inside disks: each of cryptsetup's images placed as partition 1 of an MBR or GPT disk (sfdisk),
 * beside a plain partition of random bytes, inside a fixed or dynamic VHD (qemu-img). `decrypt` gives the same
 * disk with the partition decrypted (images.conf's SHA-256) and every other byte identical; dislocker-file, a
 * second judge, decrypts the bare volumes to the bytes our CLI writes; wrong keys exit 4 with one line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { decryptBitlockerImage } from '../src/engine/index.js';
import type { Protector } from '../src/bitlocker/index.js';
import { extractCorpus, type Corpus } from './helpers/bitlk-images.js';

const CLI = join(import.meta.dirname, '..', 'bin', 'vhdcrypt.cjs');
const MIB = 1 << 20;
let corpus: Corpus;
let work: string;
beforeAll(() => {
  corpus = extractCorpus();
  work = join(corpus.dir, 'work');
  execFileSync('mkdir', ['-p', work]);
});
afterAll(() => corpus?.cleanup());

type Scheme = 'mbr' | 'gpt';
type Container = 'vhd-fixed' | 'vhd-dynamic';

/**
 * A raw disk: 1 MiB, the volume as partition 1, 2 MiB of random bytes as partition 2, 8 MiB never written (a hole
 * in a dynamic VHD), 1 MiB for GPT's backup.
 */
function makeRawDisk(volume: string, scheme: Scheme, out: string): { volOffset: number; volSize: number } {
  const volSize = statSync(volume).size;
  const total = MIB + volSize + 2 * MIB + 8 * MIB + MIB;
  execFileSync('truncate', ['-s', String(total), out]);
  const p1 = volSize / 512;
  const table =
    scheme === 'mbr'
      ? `label: dos\nstart=2048, size=${p1}, type=7\nstart=${2048 + p1}, size=4096, type=83\n`
      : `label: gpt\nstart=2048, size=${p1}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="bitlocker"\nstart=${2048 + p1}, size=4096, type=0FC63DAF-8483-4772-8E79-3D693D4741E4\n`;
  execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', out], { input: table });
  execFileSync('dd', [`if=${volume}`, `of=${out}`, 'bs=1M', `seek=1`, 'conv=notrunc,sparse', 'status=none']);
  const fd = openSync(out, 'r+');
  writeSync(fd, randomBytes(2 * MIB), 0, 2 * MIB, MIB + volSize);
  closeSync(fd);
  return { volOffset: MIB, volSize };
}

function toVhd(raw: string, container: Container, out: string): void {
  execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${container === 'vhd-fixed' ? 'fixed' : 'dynamic'},force_size=on`, raw, out]);
}

function toRaw(vhd: string, out: string): void {
  execFileSync('qemu-img', ['convert', '-q', '-f', 'vpc', '-O', 'raw', vhd, out]);
}

function sha256Range(path: string, offset: number, length: number): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(4 * MIB);
  for (let at = 0; at < length; ) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, length - at), offset + at);
    h.update(buf.subarray(0, n));
    at += n;
  }
  closeSync(fd);
  return h.digest('hex');
}

function protectorOf(name: string): Protector {
  const c = corpus.images[name]!;
  if (c.PW) return { kind: 'password', password: c.PW };
  if (c.RP) return { kind: 'recovery-password', recoveryPassword: c.RP };
  return { kind: 'clear-key' };
}

const OPENABLE = [
  'bitlk-aes-cbc-128', 'bitlk-aes-cbc-256', 'bitlk-aes-xts-128', 'bitlk-aes-xts-256', 'bitlk-aes-cbc-elephant-128',
  'bitlk-aes-cbc-elephant-256', 'bitlk-togo-aes-cbc-128', 'bitlk-togo-aes-xts-128', 'bitlk-aes-xts-128-new-entry',
  'bitlk-aes-xts-128-smart-card', 'bitlk-aes-cbc-128-4k', 'bitlk-aes-xts-128-4k', 'bitlk-aes-xts-128-startup-key',
  'bitlk-aes-xts-128-startup-key-win11', 'bitlk-aes-xts-128-two-recovery', 'bitlk-aes-xts-128-unicode',
  'bitlk-aes-xts-128-crc', 'bitlk-aes-xts-128-clearkey-only', 'bitlk-aes-xts-128-first-recovery',
];
const COMBOS: [Scheme, Container][] = [['mbr', 'vhd-dynamic'], ['gpt', 'vhd-fixed'], ['mbr', 'vhd-fixed'], ['gpt', 'vhd-dynamic']];
// Every image in one of the four disks (in turn), and the XTS-128 image in all four.
const CASES = [
  ...OPENABLE.map((name, i) => [name, ...COMBOS[i % 4]!] as const),
  ...COMBOS.filter((_, i) => i !== 2).map(([s, c]) => ['bitlk-aes-xts-128', s, c] as const),
];

describe('BitLocker volumes inside partitioned VHDs', () => {
  for (const [name, scheme, container] of CASES) {
    it(`${name} as partition 1 of a ${scheme.toUpperCase()} disk in a ${container}: decrypted in place, all else identical`, async () => {
      const tag = `${name}-${scheme}-${container}`;
      const raw = join(work, `${tag}.raw`);
      const vhd = join(work, `${tag}.vhd`);
      const out = join(work, `${tag}.out.vhd`);
      const back = join(work, `${tag}.out.raw`);
      const { volOffset, volSize } = makeRawDisk(corpus.path(name), scheme, raw);
      toVhd(raw, container, vhd);
      const r = await decryptBitlockerImage(vhd, out, { protector: protectorOf(name), threads: 2 });
      expect(r.scheme).toBe(scheme);
      expect(r.container).toBe(container);
      expect(r.volumes.map((v) => [v.partition, v.offset])).toEqual([[1, BigInt(volOffset)]]);
      toRaw(out, back);
      expect(statSync(back).size).toBe(statSync(raw).size);
      expect(sha256Range(back, volOffset, volSize)).toBe(corpus.images[name]!.SHA256SUM);
      const total = statSync(raw).size;
      expect(sha256Range(back, 0, volOffset)).toBe(sha256Range(raw, 0, volOffset));
      expect(sha256Range(back, volOffset + volSize, total - volOffset - volSize)).toBe(sha256Range(raw, volOffset + volSize, total - volOffset - volSize));
      if (container === 'vhd-dynamic') {
        // Holes kept: the 8 MiB never written (whole 2 MiB blocks inside it) are unallocated in the output as in the input.
        const holeStart = volOffset + volSize + 2 * MIB;
        const dataIn = (vhdPath: string) =>
          (JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'vpc', vhdPath], { encoding: 'utf8' })) as { start: number; length: number; data: boolean }[])
            .filter((m) => m.data && m.start < holeStart + 8 * MIB - 2 * MIB && m.start + m.length > holeStart + 2 * MIB);
        expect(dataIn(vhd)).toEqual([]);
        expect(dataIn(out)).toEqual([]);
      }
      execFileSync('rm', ['-f', raw, vhd, out, back]);
    });
  }

  it('a disk whose only BitLocker volume is encrypt-on-write is refused with BITLK_UNSUPPORTED_EOW, and nothing is written', async () => {
    const raw = join(work, 'eow.raw');
    makeRawDisk(corpus.path('bitlk-aes-xts-128-eow'), 'gpt', raw);
    await expect(decryptBitlockerImage(raw, join(work, 'eow.out'), { protector: protectorOf('bitlk-aes-xts-128-eow') })).rejects.toMatchObject({ code: 'BITLK_UNSUPPORTED_EOW' });
    expect(spawnSync('ls', ['-a', work], { encoding: 'utf8' }).stdout).not.toContain('eow.out');
  });
});

describe('the CLI on bare volumes, with dislocker as the second judge', () => {
  // Every image of the corpus with a password that Debian's dislocker 0.7.3 opens; it crashes (SIGSEGV) on the
  // encrypt-on-write, partially encrypted and Unicode-password images, which are checked against images.conf in
  // bitlocker-images.test.ts.
  const judged = [
    'bitlk-aes-cbc-128', 'bitlk-aes-cbc-128-4k', 'bitlk-aes-cbc-256', 'bitlk-aes-cbc-elephant-128', 'bitlk-aes-cbc-elephant-256',
    'bitlk-aes-xts-128', 'bitlk-aes-xts-128-4k', 'bitlk-aes-xts-128-crc', 'bitlk-aes-xts-128-first-recovery',
    'bitlk-aes-xts-128-new-entry', 'bitlk-aes-xts-128-two-recovery', 'bitlk-aes-xts-256', 'bitlk-togo-aes-cbc-128',
    'bitlk-togo-aes-xts-128',
  ];
  for (const name of judged) {
    it(`${name}: vhdcrypt decrypt --passphrase-file equals dislocker-file's output`, () => {
      const pw = join(work, 'pw');
      writeFileSync(pw, `${corpus.images[name]!.PW}\n`);
      const ours = join(work, `${name}.ours`);
      const theirs = join(work, `${name}.dislocker`);
      const r = spawnSync(process.execPath, [CLI, 'decrypt', corpus.path(name), ours, '--passphrase-file', pw], { encoding: 'utf8' });
      expect(r.stderr).toContain('decrypted with VMK');
      expect(r.status).toBe(0);
      const d = spawnSync('dislocker-file', ['-V', corpus.path(name), `-u${corpus.images[name]!.PW}`, '--', theirs], { encoding: 'utf8' });
      expect(d.status).toBe(0);
      const size = statSync(ours).size;
      expect(sha256Range(theirs, 0, size)).toBe(sha256Range(ours, 0, size));
      expect(sha256Range(ours, 0, size)).toBe(corpus.images[name]!.SHA256SUM);
      expect(statSync(ours).mode & 0o777).toBe(0o600);
      execFileSync('rm', ['-f', ours, theirs]);
    });
  }

  it('recovery password file and .BEK file open through the CLI; a wrong password exits 4 with one line', () => {
    const name = 'bitlk-aes-xts-128-startup-key';
    const c = corpus.images[name]!;
    const rp = join(work, 'rp');
    writeFileSync(rp, `${c.RP}\n`);
    const a = spawnSync(process.execPath, [CLI, 'decrypt', corpus.path(name), join(work, 'a.img'), '--recovery-password-file', rp, '--json'], { encoding: 'utf8' });
    expect(a.status).toBe(0);
    expect(JSON.parse(a.stdout).volumes[0].vmkGuid).toBe(c.RP_VMK_GUID);
    const bek = join(corpus.dir, `${c.SK_VMK_GUID!.toUpperCase()}.BEK`);
    const b = spawnSync(process.execPath, [CLI, 'decrypt', corpus.path(name), join(work, 'b.img'), '--bek-file', bek, '--json'], { encoding: 'utf8' });
    expect(b.status).toBe(0);
    expect(JSON.parse(b.stdout).volumes[0].vmkGuid).toBe(c.SK_VMK_GUID);
    expect(sha256Range(join(work, 'b.img'), 0, statSync(join(work, 'b.img')).size)).toBe(c.SHA256SUM);
    const bad = join(work, 'bad');
    writeFileSync(bad, 'not-the-password\n');
    const w = spawnSync(process.execPath, [CLI, 'decrypt', corpus.path('bitlk-aes-xts-128'), join(work, 'w.img'), '--passphrase-file', bad], { encoding: 'utf8' });
    expect(w.status).toBe(4);
    expect(w.stderr.trim().split('\n')).toEqual(['vhdcrypt: BITLK_WRONG_KEY: wrong password']);
    expect(w.stderr).not.toContain('not-the-password');
    const info = spawnSync(process.execPath, [CLI, 'info', corpus.path(name), '--json'], { encoding: 'utf8' });
    expect(info.status).toBe(0);
    const v = JSON.parse(info.stdout).partitions[0].volume;
    expect(v.guid).toBe(c.GUID);
    expect(v.protectors.map((p: { protection: string }) => p.protection).sort()).toEqual(['password', 'recovery password', 'startup key']);
    execFileSync('rm', ['-f', join(work, 'a.img'), join(work, 'b.img')]);
    void readFileSync;
  });
});
