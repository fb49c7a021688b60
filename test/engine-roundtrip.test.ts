/**
 * Engine round trips, checked against tools we did not write: qemu-img compare
 * of our decrypt output with the source, qemu's own LUKS driver over vpc on our
 * LUKS1 output, cryptsetup on our LUKS2 header, and node:crypto as the XTS
 * oracle on the payload sectors (plain64 tweak, 4096-byte sectors step 8).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encryptImage, decryptImage, unlockImage } from '../src/engine/index.js';
import { createImage, openImage } from '../src/image/index.js';
import { registerNbdSource } from '../src/nbd/source-kind.js';
import { PBKDF2_FAST, entries, firstDifference, makeRaw, oracleDecryptSector, qemuCompare, rawToVhd, removeDir, run, tempDir } from './fixtures/engine/helpers.js';
import { qemuEncryptLuks1 } from './helpers/qemu-luks.js';

const MIB = 1 << 20;
let dir: string;
let pass: string;
let keyFile: string;
let raw: string; // 24 MiB random
let rawModel: Uint8Array;
let fixed: string;
let dynRaw: string; // 48 MiB with holes
let dynModel: Uint8Array;
let dyn: string;

beforeAll(() => {
  dir = tempDir('engine-rt');
  pass = join(dir, 'pass.txt');
  writeFileSync(pass, 'correct horse battery staple\n');
  keyFile = join(dir, 'key.bin');
  writeFileSync(keyFile, Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff)));
  raw = join(dir, 'src.raw');
  rawModel = makeRaw(raw, 24 * MIB, [[0, 24 * MIB]]);
  fixed = join(dir, 'src-fixed.vhd');
  rawToVhd(raw, fixed, 'fixed');
  dynRaw = join(dir, 'src-dyn.raw');
  // Holes: 2 MiB blocks 1, 3..9, 11..19 stay empty; partial data inside blocks 0, 2, 10 and the last one.
  dynModel = makeRaw(dynRaw, 48 * MIB, [
    [4096, 300 * 1024],
    [4 * MIB + 512, 2 * MIB - 1024],
    [20 * MIB, 1 * MIB],
    [46 * MIB + 4096, 2 * MIB - 4096],
  ]);
  dyn = join(dir, 'src-dyn.vhd');
  rawToVhd(dynRaw, dyn, 'dynamic');
});

afterAll(() => removeDir(dir));

function out(name: string): string {
  return join(dir, name);
}

/** Container ranges that hold data, from qemu-img map. */
function qemuMapData(path: string): Array<{ start: number; length: number }> {
  const j = JSON.parse(run('qemu-img', ['map', '-f', 'vpc', '--output=json', path])) as Array<{ start: number; length: number; data: boolean }>;
  return j.filter((e) => e.data).map((e) => ({ start: e.start, length: e.length }));
}

describe('encrypt then decrypt gives the source back (qemu-img compare)', () => {
  it('raw -> LUKS2 raw (4096-byte sectors), 1 thread; cryptsetup accepts the header and passphrase', async () => {
    const enc = out('raw-l2.img');
    const r = await encryptImage(raw, enc, { passphraseFile: pass, kdf: PBKDF2_FAST, threads: 1 });
    expect(r.container).toBe('raw');
    expect(r.format).toBe('luks2');
    expect(r.sectorSize).toBe(4096);
    expect(r.dataOffset).toBe(16n * 1024n * 1024n);
    const ok = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', pass, '--keyfile-size', '28', enc], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    const bad = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', keyFile, enc], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    const dec = out('raw-l2.dec');
    await decryptImage(enc, dec, { passphraseFile: pass, threads: 1 });
    expect(firstDifference(new Uint8Array(readFileSync(dec)), rawModel)).toBe(-1);
  });

  it('payload sectors are AES-XTS plain64 under the volume key (node:crypto oracle), 4096-byte sectors count the tweak in 512-byte units', async () => {
    const enc = out('raw-l2.img');
    const img = await openImage(enc);
    const u = await unlockImage(img, { passphraseFile: pass });
    try {
      const file = readFileSync(enc);
      for (const sector of [0, 1, 777, 24 * 256 - 1]) {
        const at = Number(u.layout.dataOffset) + sector * 4096;
        const plain = oracleDecryptSector(u.volumeKey, BigInt(sector * 8), file.subarray(at, at + 4096));
        expect(firstDifference(plain, rawModel.subarray(sector * 4096, (sector + 1) * 4096))).toBe(-1);
      }
    } finally {
      u.volumeKey.fill(0);
      await img.close();
    }
  });

  it('fixed VHD -> LUKS1 fixed VHD, 2 threads; qemu luks-over-vpc reads the source bytes', async () => {
    const enc = out('fixed-l1.vhd');
    const r = await encryptImage(fixed, enc, { format: 'luks1', passphrase: 'hunter2', kdf: PBKDF2_FAST, threads: 2 });
    expect(r.container).toBe('vhd-fixed');
    expect(r.sectorSize).toBe(512);
    expect(r.dataOffset).toBe(2n * 1024n * 1024n);
    const q = out('fixed-l1.qemu.raw');
    run('qemu-img', ['convert', '--object', 'secret,id=s,data=hunter2', '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`, '-O', 'raw', q]);
    expect(firstDifference(new Uint8Array(readFileSync(q)), rawModel)).toBe(-1);
    const dec = out('fixed-l1.dec.vhd');
    await decryptImage(enc, dec, { passphrase: 'hunter2' });
    expect(qemuCompare(fixed, 'vpc', dec, 'vpc').same).toBe(true);
    expect((await openImage(dec).then(async (i) => [i.format, await i.close()]))[0]).toBe('vhd-fixed');
  });

  it('dynamic VHD with holes -> sparse LUKS2 dynamic VHD: holes stay holes, decrypt gives a dynamic VHD equal to the source', async () => {
    const enc = out('dyn-l2.vhd');
    const r = await encryptImage(dyn, enc, { passphraseFile: pass, kdf: PBKDF2_FAST, sectorSize: 512 });
    expect(r.container).toBe('vhd-dynamic');
    expect(r.bytesTotal).toBe(BigInt(4 * 2 * MIB)); // the four allocated 2 MiB blocks, nothing else
    // Payload blocks allocated in the output are exactly the source's, shifted by the data offset.
    const srcData = qemuMapData(dyn);
    const encData = qemuMapData(enc).filter((e) => e.start >= Number(r.dataOffset)).map((e) => ({ start: e.start - Number(r.dataOffset), length: e.length }));
    expect(encData).toEqual(srcData);
    const dec = out('dyn-l2.dec.vhd');
    const d = await decryptImage(enc, dec, { passphraseFile: pass });
    expect(d.container).toBe('vhd-dynamic');
    expect(qemuCompare(dyn, 'vpc', dec, 'vpc').same).toBe(true);
    expect(qemuMapData(dec)).toEqual(srcData);
  });

  it('dynamic VHD --no-sparse -> LUKS1 dynamic VHD that qemu luks-over-vpc reads as the source', async () => {
    const enc = out('dyn-l1-full.vhd');
    await encryptImage(dyn, enc, { format: 'luks1', passphrase: 'hunter2', kdf: PBKDF2_FAST, noSparse: true });
    const q = out('dyn-l1-full.qemu.raw');
    run('qemu-img', ['convert', '--object', 'secret,id=s,data=hunter2', '--image-opts', `driver=luks,key-secret=s,file.driver=vpc,file.file.filename=${enc}`, '-O', 'raw', q]);
    expect(qemuCompare(dyn, 'vpc', q, 'raw').same).toBe(true);
  });

  it('differencing chain is flattened into a dynamic VHD holding the merged disk', async () => {
    const child = out('child.vhd');
    const img = await createImage(child, { format: 'vhd-differencing', parent: dyn });
    const model = Uint8Array.from(dynModel.subarray(0, Number(img.virtualSize)));
    const patch = new Uint8Array(3 * MIB + 1024).fill(0xa7);
    await img.write(BigInt(MIB + 512), patch); // over a hole and part of an allocated parent block
    model.set(patch, MIB + 512);
    await img.close();
    const enc = out('child-l2.vhd');
    const r = await encryptImage(child, enc, { passphraseFile: pass, kdf: PBKDF2_FAST });
    expect(r.container).toBe('vhd-dynamic');
    const dec = out('child.dec.raw');
    await decryptImage(enc, dec, { passphraseFile: pass, outFormat: 'raw' });
    expect(firstDifference(new Uint8Array(readFileSync(dec)), model)).toBe(-1);
  });

  it('plain with a raw key file: payload is plain64 AES-XTS at offset 0 (node:crypto oracle); decrypt with the same key file', async () => {
    const enc = out('plain.vhd');
    const r = await encryptImage(fixed, enc, { format: 'plain', keyFile, threads: 2 });
    expect(r.dataOffset).toBe(0n);
    expect(r.outputVirtualSize).toBe(BigInt(rawModel.length));
    const file = readFileSync(enc);
    const key = readFileSync(keyFile).subarray(0, 64);
    for (const s of [0, 5, 49151]) {
      expect(firstDifference(oracleDecryptSector(key, BigInt(s), file.subarray(s * 512, s * 512 + 512)), rawModel.subarray(s * 512, s * 512 + 512))).toBe(-1);
    }
    const dec = out('plain.dec.vhd');
    await decryptImage(enc, dec, { keyFile });
    expect(qemuCompare(fixed, 'vpc', dec, 'vpc').same).toBe(true);
  });

  for (const backend of ['wasm', 'js'] as const) {
    it(`${backend} backend, 2 threads, 256-bit key: same round trip`, async () => {
      const small = out(`small-${backend}.raw`);
      const model = makeRaw(small, 4 * MIB, [[0, 4 * MIB]]);
      const enc = out(`small-${backend}.img`);
      const r = await encryptImage(small, enc, { passphrase: 'x', kdf: PBKDF2_FAST, backend, threads: 2, keySize: 256, batchBytes: 256 * 1024 });
      expect(r.backend).toBe(backend);
      const dec = out(`small-${backend}.dec`);
      await decryptImage(enc, dec, { passphrase: 'x', backend: 'native' });
      expect(firstDifference(new Uint8Array(readFileSync(dec)), model)).toBe(-1);
    });
  }

  it('1 and 3 threads (batches of 1 MiB) give the same plaintext back', async () => {
    for (const threads of [1, 3]) {
      const enc = out(`t${threads}.img`);
      await encryptImage(raw, enc, { passphrase: 'p', kdf: PBKDF2_FAST, threads, batchBytes: 1 * MIB });
      const dec = out(`t${threads}.dec`);
      await decryptImage(enc, dec, { passphrase: 'p', threads: 4 - threads });
      expect(firstDifference(new Uint8Array(readFileSync(dec)), rawModel)).toBe(-1);
    }
  });

  it('a recovery passphrase keyslot (argon2id) opens the volume too; cryptsetup agrees', async () => {
    const enc = out('recovery.img');
    await encryptImage(raw, enc, {
      format: 'luks2',
      passphrase: 'main',
      kdf: PBKDF2_FAST,
      addRecoveryPassphrase: 'recovery words',
      recoveryKdf: { type: 'argon2id', time: 4, memoryKiB: 8192, parallelism: 1 },
    });
    const dump = run('cryptsetup', ['luksDump', enc]);
    expect(dump).toMatch(/1: luks2[\s\S]*PBKDF:\s+argon2id/);
    const rk = out('recovery.key');
    writeFileSync(rk, 'recovery words');
    expect(spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file', rk, enc]).status).toBe(0);
    const dec = out('recovery.dec');
    await decryptImage(enc, dec, { passphrase: 'recovery words' });
    expect(firstDifference(new Uint8Array(readFileSync(dec)), rawModel)).toBe(-1);
  });

  it('progress events rise to the total with a rate', async () => {
    const seen: Array<{ done: bigint; total: bigint; rate: number }> = [];
    const enc = out('progress.img');
    await encryptImage(raw, enc, { passphrase: 'p', kdf: PBKDF2_FAST, batchBytes: 1 * MIB, onProgress: (p) => seen.push({ done: p.bytesDone, total: p.bytesTotal, rate: p.rate }) });
    expect(seen.length).toBeGreaterThanOrEqual(24);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.done).toBeGreaterThanOrEqual(seen[i - 1]!.done);
    expect(seen.at(-1)!.done).toBe(BigInt(24 * MIB));
    expect(seen.every((p) => p.total === BigInt(24 * MIB))).toBe(true);
    expect(seen.at(-1)!.rate).toBeGreaterThan(0);
  });

  it('an NBD export (nbdkit file, holes reported by base:allocation) encrypts into a sparse dynamic VHD', async () => {
    const sock = out('nbd.sock');
    const pidFile = out('nbdkit.pid');
    // Without -f nbdkit returns once it listens, leaving its pid in the file.
    // The engine is used here without the package entry, so the NBD export kind is registered as a library caller would.
    registerNbdSource();
    expect(spawnSync('nbdkit', ['-U', sock, '-P', pidFile, 'file', dynRaw], { stdio: 'ignore' }).status).toBe(0);
    try {
      const enc = out('nbd-l2.vhd');
      const r = await encryptImage(`nbd+unix:///?socket=${sock}`, enc, { passphrase: 'n', kdf: PBKDF2_FAST, outFormat: 'vhd-dynamic' });
      expect(r.bytesTotal).toBeLessThan(BigInt(48 * MIB));
      const dec = out('nbd.dec');
      await decryptImage(enc, dec, { passphrase: 'n', outFormat: 'raw' });
      expect(firstDifference(new Uint8Array(readFileSync(dec)), dynModel)).toBe(-1);
    } finally {
      process.kill(Number(readFileSync(pidFile, 'utf8').trim()));
    }
  });

  it('decrypts a LUKS1 volume whose data qemu-img encrypted', async () => {
    const q = out('qemu-made.luks');
    qemuEncryptLuks1(raw, q, 'qemupass');
    const dec = out('qemu-made.dec');
    const r = await decryptImage(q, dec, { passphrase: 'qemupass' });
    expect(r.format).toBe('luks1');
    expect(firstDifference(new Uint8Array(readFileSync(dec)), rawModel)).toBe(-1);
  });

  it('decryptImage refuses a batch size encryptImage refuses (ENGINE_BAD_ARGUMENT), before it writes anything', async () => {
    const enc = out('batch-check.img');
    await encryptImage(raw, enc, { passphrase: 'b', kdf: PBKDF2_FAST, threads: 1 });
    for (const batchBytes of [1000, 4096 * 3 + 1, 128 * MIB, 0]) {
      const dec = out('batch-check.dec');
      const codes = await Promise.allSettled([encryptImage(raw, out('batch-check.enc2'), { passphrase: 'b', kdf: PBKDF2_FAST, batchBytes }), decryptImage(enc, dec, { passphrase: 'b', batchBytes })]);
      expect(codes.map((c) => (c.status === 'rejected' ? (c.reason as { code?: string }).code : 'fulfilled')), `batchBytes ${batchBytes}`).toEqual(['ENGINE_BAD_ARGUMENT', 'ENGINE_BAD_ARGUMENT']);
      expect(entries(dir).filter((n) => n.startsWith('batch-check.dec') || n.startsWith('.batch-check.dec'))).toEqual([]);
    }
  });

  it('leaves no temp or journal files behind', () => {
    expect(entries(dir).filter((n) => n.includes('vhdcrypt'))).toEqual([]);
  });
});
