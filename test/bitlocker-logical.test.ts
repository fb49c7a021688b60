/**
 * BitLocker in a logical partition of an MBR extended partition: sfdisk lays out a primary plain partition and an
 * extended one holding a plain logical partition (5) and cryptsetup's XTS-128 image (6). `decrypt` of the raw disk
 * and of a dynamic VHD (and `serve`'s export, read by nbdcopy) gives partition 6 with images.conf's SHA-256 and every other byte identical (EBRs included);
 * hand-made EBR chains that loop, run too long or point outside the disk or the extended partition are refused
 * with BITLK_BAD_PARTITION_TABLE, after a bounded number of sector reads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { decryptBitlockerImage, describeBitlockerDisk } from '../src/engine/index.js';
import { readDiskLayout, type VolumeBytes } from '../src/bitlocker/index.js';
import { extractCorpus, fileBytes, type Corpus } from './helpers/bitlk-images.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';

const CLI = join(import.meta.dirname, '..', 'bin', 'vhdcrypt.cjs');
const MIB = 1 << 20;
const IMAGE = 'bitlk-aes-xts-128';
let corpus: Corpus;
let work: string;
beforeAll(() => {
  corpus = extractCorpus();
  work = join(corpus.dir, 'work');
  execFileSync('mkdir', ['-p', work]);
});
afterAll(() => corpus?.cleanup());

// Sectors: primary 1 at 2048 (2 MiB), extended from 6144 to the end; sfdisk puts the EBRs at 6144 and 12288.
const P1 = 2048;
const EXT = 6144;
const L5 = 8192;
const L6 = 14336;

function makeDisk(out: string): { volOffset: number; volSize: number; total: number } {
  const volSize = statSync(corpus.path(IMAGE)).size;
  const total = L6 * 512 + volSize + MIB;
  execFileSync('truncate', ['-s', String(total), out]);
  const table = `label: dos\nstart=${P1}, size=4096, type=83\nstart=${EXT}, type=5\nstart=${L5}, size=4096, type=83\nstart=${L6}, size=${volSize / 512}, type=7\n`;
  execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', out], { input: table });
  execFileSync('dd', [`if=${corpus.path(IMAGE)}`, `of=${out}`, 'bs=512', `seek=${L6}`, 'conv=notrunc,sparse', 'status=none']);
  const fd = openSync(out, 'r+');
  writeSync(fd, randomBytes(2 * MIB), 0, 2 * MIB, P1 * 512);
  writeSync(fd, randomBytes(2 * MIB), 0, 2 * MIB, L5 * 512);
  closeSync(fd);
  return { volOffset: L6 * 512, volSize, total };
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

describe('BitLocker in a logical partition', () => {
  it('the EBR chain is walked: partitions 1, 2 (extended), 5 and 6 (BitLocker); info describes the volume', async () => {
    const raw = join(work, 'list.raw');
    const { volOffset, volSize } = makeDisk(raw);
    const f = fileBytes(raw);
    try {
      const layout = await readDiskLayout(f);
      expect(layout.scheme).toBe('mbr');
      expect(layout.partitions.map((p) => [p.index, p.offset, p.type, p.bitlocker])).toEqual([
        [1, BigInt(P1 * 512), '83', false],
        [2, BigInt(EXT * 512), '05', false],
        [5, BigInt(L5 * 512), '83', false],
        [6, BigInt(volOffset), '07', true],
      ]);
      expect(layout.partitions[3]!.size).toBe(BigInt(volSize));
    } finally {
      f.close();
    }
    const d = await describeBitlockerDisk(raw);
    const p6 = d.partitions.find((p) => p.index === 6)!;
    expect(p6.volume?.guid).toBe(corpus.images[IMAGE]!.GUID);
    const info = spawnSync(process.execPath, [CLI, 'info', raw], { encoding: 'utf8' });
    expect(info.status).toBe(0);
    expect(info.stdout).toContain(`  6: offset ${volOffset}, ${volSize} bytes, type 07, BitLocker`);
    expect(info.stdout).toContain(`volume ${corpus.images[IMAGE]!.GUID}`);
    execFileSync('rm', ['-f', raw]);
  });

  for (const container of ['raw', 'vhd-dynamic'] as const) {
    it(`decrypt of the disk as ${container}: partition 6 decrypted in place, every other byte identical`, async () => {
      const raw = join(work, `${container}.raw`);
      const { volOffset, volSize, total } = makeDisk(raw);
      let src = raw;
      let out = join(work, `${container}.out.raw`);
      if (container === 'vhd-dynamic') {
        src = join(work, 'd.vhd');
        out = join(work, 'd.out.vhd');
        execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, src]);
      }
      const r = await decryptBitlockerImage(src, out, { protector: { kind: 'password', password: corpus.images[IMAGE]!.PW! }, threads: 2 });
      expect(r.scheme).toBe('mbr');
      expect(r.volumes.map((v) => [v.partition, v.offset])).toEqual([[6, BigInt(volOffset)]]);
      let back = out;
      if (container === 'vhd-dynamic') {
        back = join(work, 'd.back.raw');
        execFileSync('qemu-img', ['convert', '-q', '-f', 'vpc', '-O', 'raw', out, back]);
      }
      expect(statSync(back).size).toBe(total);
      expect(sha256Range(back, volOffset, volSize)).toBe(corpus.images[IMAGE]!.SHA256SUM);
      expect(sha256Range(back, 0, volOffset)).toBe(sha256Range(raw, 0, volOffset));
      expect(sha256Range(back, volOffset + volSize, total - volOffset - volSize)).toBe(sha256Range(raw, volOffset + volSize, total - volOffset - volSize));
      execFileSync('rm', ['-f', raw, src, out, back]);
    });
  }

  it('serve exports the disk with partition 6 decrypted (nbdcopy), every other byte identical', async () => {
    const raw = join(work, 'serve.raw');
    const { volOffset, volSize, total } = makeDisk(raw);
    const pw = join(work, 'pw');
    writeFileSync(pw, `${corpus.images[IMAGE]!.PW}\n`);
    const s = await startServe([raw, '--passphrase-file', pw]);
    const copy = join(work, 'served.raw');
    try {
      execFileSync('nbdcopy', [s.uri, copy], { env: TOOL_ENV });
    } finally {
      expect(await s.stop()).toBe(0);
    }
    expect(statSync(copy).size).toBe(total);
    expect(sha256Range(copy, volOffset, volSize)).toBe(corpus.images[IMAGE]!.SHA256SUM);
    expect(sha256Range(copy, 0, volOffset)).toBe(sha256Range(raw, 0, volOffset));
    expect(sha256Range(copy, volOffset + volSize, total - volOffset - volSize)).toBe(sha256Range(raw, volOffset + volSize, total - volOffset - volSize));
    execFileSync('rm', ['-f', raw, copy]);
  });
});

/** A hand-made MBR disk in memory: sector 0 and any EBRs, given as (sector, entries); reads are counted. */
function handMade(sectors: number, tables: [number, [type: number, start: number, size: number][]][]): VolumeBytes & { reads: number } {
  const disk = Buffer.alloc(sectors * 512);
  for (const [at, entries] of tables) {
    for (const [k, [type, start, size]] of entries.entries()) {
      const e = 446 + 16 * k + at * 512;
      disk[e + 4] = type;
      disk.writeUInt32LE(start, e + 8);
      disk.writeUInt32LE(size, e + 12);
    }
    disk[at * 512 + 510] = 0x55;
    disk[at * 512 + 511] = 0xaa;
  }
  const v = {
    reads: 0,
    size: BigInt(disk.length),
    read: async (o: bigint, b: Uint8Array) => {
      v.reads++;
      expect(b.length).toBeLessThanOrEqual(512);
      b.set(disk.subarray(Number(o), Number(o) + b.length));
    },
  };
  return v;
}

describe('hostile EBR chains are a typed error', () => {
  // 4 MiB disk; extended partition at sector 2048, 4096 sectors.
  const mbr: [number, [number, number, number][]] = [0, [[0x05, 2048, 4096]]];

  it('a well-formed hand-made chain reads (the baseline the others break)', async () => {
    const d = handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 200, 101]]], [2248, [[0x83, 1, 100]]]]);
    expect((await readDiskLayout(d)).partitions.map((p) => [p.index, p.offset])).toEqual([[1, 2048n * 512n], [5, 2049n * 512n], [6, 2249n * 512n]]);
  });

  const cases: [string, ReturnType<typeof handMade>, RegExp][] = [
    ['a chain that loops back to its first EBR', handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 200, 101]]], [2248, [[0x83, 1, 100], [0x05, 0, 101]]]]), /loops back/],
    ['an EBR that links to itself', handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 0, 101]]]]), /loops back/],
    ['an EBR linking past the end of the disk', handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 0xfffff000, 101]]]]), /outside the extended partition/],
    ['an EBR linking past the end of the extended partition', handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 4096, 101]]]]), /outside the extended partition/],
    ['a logical partition past the end of the disk', handMade(8192, [mbr, [2048, [[0x83, 1, 0xffffff00]]]]), /outside the extended partition/],
    ['a logical partition past the end of the extended partition', handMade(8192, [mbr, [2048, [[0x83, 1, 4096]]]]), /outside the extended partition/],
    ['a logical partition covering the next EBR', handMade(8192, [mbr, [2048, [[0x83, 1, 300], [0x05, 200, 101]]], [2248, []]]), /covers the EBR/],
    [
      'a chain of 200 EBRs',
      handMade(8192, [mbr, ...Array.from({ length: 200 }, (_, i): [number, [number, number, number][]] => [2048 + 10 * i, [[0x83, 1, 5], [0x05, 10 * (i + 1), 10]]])]),
      /longer than 128/,
    ],
  ];
  for (const [what, disk, message] of cases) {
    it(`${what}: BITLK_BAD_PARTITION_TABLE`, async () => {
      await expect(readDiskLayout(disk)).rejects.toMatchObject({ code: 'BITLK_BAD_PARTITION_TABLE', message: expect.stringMatching(message) });
      expect(disk.reads).toBeLessThanOrEqual(2 + 2 * 128);
    });
  }

  it('decrypt of a raw disk whose EBR chain loops fails with BITLK_BAD_PARTITION_TABLE and writes nothing', async () => {
    const raw = join(work, 'loop.raw');
    const d = handMade(8192, [mbr, [2048, [[0x83, 1, 100], [0x05, 200, 101]]], [2248, [[0x83, 1, 100], [0x05, 0, 101]]]]);
    const bytes = Buffer.alloc(Number(d.size));
    await d.read(0n, bytes.subarray(0, 512));
    for (const s of [2048, 2248]) await d.read(BigInt(s * 512), bytes.subarray(s * 512, s * 512 + 512));
    writeFileSync(raw, bytes);
    await expect(decryptBitlockerImage(raw, join(work, 'loop.out'), { protector: { kind: 'clear-key' } })).rejects.toMatchObject({ code: 'BITLK_BAD_PARTITION_TABLE' });
    expect(spawnSync('ls', [work], { encoding: 'utf8' }).stdout).not.toContain('loop.out');
  });
});
