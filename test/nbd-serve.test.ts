/**
 * `vhdcrypt serve` end to end: LUKS2 in a dynamic VHD with holes (built with
 * the luks and image layers, payload encrypted by node:crypto) and LUKS1 made
 * by qemu-img; read, written and mapped by qemu-img, qemu-io, nbdinfo and
 * nbdcopy; written data checked by independent decryption (node:crypto, and
 * QEMU's own luks driver).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createImage } from '../src/image/index.js';
import { format, KDF_RANDOM_SECRET } from '../src/luks/index.js';
import { NbdClient } from '../src/nbd/index.js';
import { makeTempDir, run, runOk } from './helpers/nbd-harness.js';
import { startServe, type ServeProcess } from './helpers/nbd-serve-cli.js';
import { xtsPlain64 } from './helpers/xts-plain64.js';
import { qemuEncryptLuks1 } from './helpers/qemu-luks.js';

const MIB = 1024 * 1024;
const PASS = 'correct horse battery staple';

describe('vhdcrypt serve: LUKS2 (4096-byte sectors) in a dynamic VHD with holes', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let vhd: string;
  let passFile: string;
  let volumeKey: Uint8Array;
  let dataOffset: bigint;
  let plain: Buffer;
  let srv: ServeProcess | null = null;

  beforeAll(async () => {
    tmp = await makeTempDir();
    passFile = join(tmp.dir, 'pass');
    await writeFile(passFile, PASS + '\n');
    vhd = join(tmp.dir, 'enc.vhd');
    const img = await createImage(vhd, { format: 'vhd-dynamic', virtualSize: BigInt(16 * MIB + 12 * MIB) });
    const f = await format(img.virtualSize, { version: 2, keyBits: 512, sectorSize: 4096, kdf: KDF_RANDOM_SECRET, passphrase: PASS });
    volumeKey = f.volumeKey;
    dataOffset = f.info.dataOffset;
    const payload = Number(img.virtualSize - dataOffset) - (Number(img.virtualSize - dataOffset) % 4096);
    // Plaintext: data in blocks 0, 2 and part of 4; blocks 1, 3, 5 stay holes (never written).
    plain = Buffer.alloc(payload);
    randomBytes(2 * MIB).copy(plain, 0);
    randomBytes(2 * MIB).copy(plain, 4 * MIB);
    randomBytes(MIB).copy(plain, 8 * MIB + 4096);
    await img.write(0n, f.header);
    for (const [off, len] of [[0, 2 * MIB], [4 * MIB, 2 * MIB], [8 * MIB, 2 * MIB]] as const) {
      await img.write(dataOffset + BigInt(off), xtsPlain64(true, volumeKey, plain.subarray(off, off + len), 4096, BigInt(off / 512), 8n));
    }
    await img.close();
  });
  afterAll(async () => {
    await srv?.stop();
    await tmp?.cleanup();
  });

  async function exportBytes(uri: string, name = 'out.raw'): Promise<Buffer> {
    const out = join(tmp.dir, name);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    return readFile(out);
  }

  /** Independent decryption of the VHD's payload: qemu-img for the container, node:crypto for XTS. */
  async function decryptedOnDisk(): Promise<Buffer> {
    const raw = join(tmp.dir, 'container.raw');
    await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, raw]);
    {
      const buf = (await readFile(raw)).subarray(Number(dataOffset), Number(dataOffset) + plain.length);
      const out = Buffer.alloc(plain.length);
      for (let at = 0; at < buf.length; at += 4096) {
        const sector = buf.subarray(at, at + 4096);
        if (sector.every((b) => b === 0)) continue; // a hole: plaintext zeros
        xtsPlain64(false, volumeKey, sector, 4096, BigInt(at / 512), 8n).copy(out, at);
      }
      return out;
    }
  }

  it('serves the plaintext; qemu-img compare agrees; nbdinfo --map shows the holes', async () => {
    srv = await startServe([vhd, '--passphrase-file', passFile, '--socket', join(tmp.dir, 's1.sock'), '--writable']);
    expect(srv.line).toBe(`nbd+unix:///?socket=${join(tmp.dir, 's1.sock')} (writable, no TLS)`);
    expect((await exportBytes(srv.uri)).equals(plain)).toBe(true);
    const plainFile = join(tmp.dir, 'plain.raw');
    await writeFile(plainFile, plain);
    await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', srv.uri, plainFile]);
    const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', srv.uri])).stdout.toString()) as Array<{ offset: number; length: number; type: number }>;
    const holeAt = (off: number) => map.some((e) => (e.type & 1) === 1 && e.offset <= off && off < e.offset + e.length);
    expect(holeAt(2 * MIB)).toBe(true);
    expect(holeAt(6 * MIB + 4096)).toBe(true);
    expect(holeAt(0)).toBe(false);
    expect(holeAt(4 * MIB)).toBe(false);
    const info = JSON.parse((await runOk('nbdinfo', ['--json', srv.uri])).stdout.toString());
    expect(info.exports[0]['block_size_preferred']).toBe(4096);
    expect(info.exports[0]['can_multi_conn']).toBe(true);
  });

  it('several clients at once read the same plaintext', async () => {
    const outs = await Promise.all([0, 1, 2].map((i) => exportBytes(srv!.uri, `par${i}.raw`)));
    const copy = join(tmp.dir, 'copy.raw');
    await runOk('nbdcopy', [srv!.uri, copy]);
    for (const o of [...outs, await readFile(copy)]) expect(o.equals(plain)).toBe(true);
  });

  it('qemu-io writes (into data and into a hole) survive a restart and decrypt independently', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'write -P 0x6b 2M 4096', '-c', 'write -P 0x7c 6295553 1000', srv!.uri]);
    plain.fill(0x5a, MIB, MIB + 65536);
    plain.fill(0x6b, 2 * MIB, 2 * MIB + 4096);
    plain.fill(0x7c, 6295553, 6295553 + 1000);
    expect(await srv!.stop()).toBe(0);
    srv = await startServe([vhd, '--passphrase-file', passFile, '--socket', join(tmp.dir, 's2.sock')]);
    expect(srv.line).toMatch(/ \(read-only, no TLS\)$/);
    expect((await exportBytes(srv.uri)).equals(plain)).toBe(true);
    expect((await decryptedOnDisk()).equals(plain)).toBe(true);
    const ro = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 512', srv.uri]);
    expect(ro.stdout.toString() + ro.stderr).toMatch(/read-only|Operation not permitted|denied/i);
    await srv.stop();
    srv = null;
  });

  it('nbdcopy writes a whole disk in, and reads it back out', async () => {
    srv = await startServe([vhd, '--passphrase-file', passFile, '--socket', join(tmp.dir, 's3.sock'), '--writable']);
    const src = Buffer.alloc(plain.length);
    randomBytes(3 * MIB).copy(src, MIB + 17);
    randomBytes(MIB).copy(src, 9 * MIB);
    const srcFile = join(tmp.dir, 'src.raw');
    await writeFile(srcFile, src);
    await runOk('nbdcopy', [srcFile, srv.uri]);
    const back = join(tmp.dir, 'back.raw');
    await runOk('nbdcopy', [srv.uri, back]);
    expect((await readFile(back)).equals(src)).toBe(true);
    expect(await srv.stop()).toBe(0);
    srv = null;
    plain = src;
    expect((await decryptedOnDisk()).equals(src)).toBe(true);
  });

  it('a wrong passphrase is a clear error with exit status 4', async () => {
    const bad = join(tmp.dir, 'bad');
    await writeFile(bad, 'nope\n');
    const r = await run(process.execPath, [join(__dirname, '..', 'bin', 'vhdcrypt.cjs'), 'serve', vhd, '--passphrase-file', bad, '--socket', join(tmp.dir, 'bad.sock')]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/LUKS_/);
  });
});

describe('vhdcrypt serve: LUKS1 made by qemu-img, over TCP', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    tmp = await makeTempDir();
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('reads what QEMU encrypted; QEMU decrypts what we wrote', async () => {
    const plainFile = join(tmp.dir, 'plain.raw');
    const plain = randomBytes(6 * MIB);
    await writeFile(plainFile, plain);
    const enc = join(tmp.dir, 'enc.luks');
    const secret = ['--object', `secret,id=s,data=${PASS}`];
    qemuEncryptLuks1(plainFile, enc, PASS);
    const passFile = join(tmp.dir, 'pass');
    await writeFile(passFile, PASS);
    const srv = await startServe([enc, '--passphrase-file', passFile, '--port', '0', '--tls', 'off', '--writable']);
    try {
      expect(srv.line).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/ \(writable, no TLS\)$/);
      const out = join(tmp.dir, 'out.raw');
      await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri, out]);
      expect((await readFile(out)).subarray(0, plain.length).equals(plain)).toBe(true);
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'write -P 0x33 777 333', srv.uri]);
      // Reads after writes, through the same server (worker read path on a raw container).
      plain.fill(0x5a, MIB, MIB + 65536);
      plain.fill(0x33, 777, 777 + 333);
      await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri, out]);
      expect((await readFile(out)).subarray(0, plain.length).equals(plain)).toBe(true);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    const q = join(tmp.dir, 'qemu.raw');
    await runOk('qemu-img', ['convert', ...secret, '--image-opts', `driver=luks,key-secret=s,file.filename=${enc}`, '-O', 'raw', q]);
    expect((await readFile(q)).subarray(0, plain.length).equals(plain)).toBe(true);

    // Read-only: several clients at once, each over two connections.
    const multi = await startServe([enc, '--passphrase-file', passFile, '--read-only', '--socket', join(tmp.dir, 'multi.sock')]);
    try {
      const outs = await Promise.all([0, 1, 2].map(async (i) => {
        const o = join(tmp.dir, `multi${i}.raw`);
        await runOk('nbdcopy', ['--connections=2', multi.uri, o]);
        return readFile(o);
      }));
      for (const o of outs) expect(o.subarray(0, plain.length).equals(plain)).toBe(true);
      const ro = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 512', multi.uri]);
      expect(ro.stdout.toString() + ro.stderr).toMatch(/read-only|Operation not permitted|denied/i);
    } finally {
      expect(await multi.stop()).toBe(0);
    }
    expect(existsSync(join(tmp.dir, 'multi.sock'))).toBe(false);
  });
});

describe('vhdcrypt serve: export names, listing and shutdown with clients attached', () => {
  it('lists its export, refuses other names, and exits 0 on SIGINT/SIGTERM with clients connected', async () => {
    const tmp = await makeTempDir();
    try {
      const img = join(tmp.dir, 'plain.raw');
      const data = randomBytes(4 * MIB);
      await writeFile(img, data);
      for (const signal of ['SIGINT', 'SIGTERM'] as const) {
        const sock = join(tmp.dir, `${signal}.sock`);
        const srv = await startServe([img, '--plaintext', '--export-name', 'disk1', '--socket', sock]);
        expect(srv.uri).toBe(`nbd+unix:///disk1?socket=${sock}`);
        const list = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${sock}`]);
        expect(JSON.parse(list.stdout.toString()).exports.map((e: { 'export-name': string }) => e['export-name'])).toEqual(['disk1']);
        const wrong = await run('nbdinfo', ['--size', `nbd+unix:///other?socket=${sock}`]);
        expect(wrong.code).not.toBe(0);
        const client = await NbdClient.connect(srv.uri);
        const buf = new Uint8Array(MIB);
        await client.read(BigInt(MIB), buf);
        expect(Buffer.from(buf).equals(data.subarray(MIB, 2 * MIB))).toBe(true);
        // Signal while the client is still connected: the server finishes, closes, and exits cleanly.
        expect(await srv.stop(signal)).toBe(0);
        await expect(client.read(0n, new Uint8Array(4096))).rejects.toMatchObject({ code: expect.stringMatching(/^NBD_/) });
        await client.close();
        expect(existsSync(sock)).toBe(false);
      }
    } finally {
      await tmp.cleanup();
    }
  });
});
