/**
 * TRIM and WRITE_ZEROES on an encrypted dynamic VHD: whole VHD blocks are
 * deallocated (BLOCK_STATUS reports holes, reads give zeros), partial ranges
 * are written as encrypted zeros, NO_HOLE keeps blocks allocated, and a later
 * partial write into a deallocated block leaves the rest of it reading zeros.
 * Checked through the export and by decrypting the VHD with qemu-img + node:crypto.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createImage } from '../src/image/index.js';
import { format, KDF_RANDOM_SECRET } from '../src/luks/index.js';
import { NbdServer } from '../src/nbd/index.js';
import { openExportBacking } from '../src/nbd/open-export.js';
import { makeTempDir, runOk } from './helpers/nbd-harness.js';
import { xtsPlain64 } from './helpers/xts-plain64.js';

const MIB = 1024 * 1024;
const PASS = 'dealloc test passphrase';

describe('encrypted export: TRIM / WRITE_ZEROES deallocate whole VHD blocks', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let vhd: string;
  let key: Uint8Array;
  let dataOffset: bigint;
  let server: NbdServer;
  let uri: string;
  let model: Buffer;

  beforeAll(async () => {
    tmp = await makeTempDir();
    vhd = join(tmp.dir, 'enc.vhd');
    const img = await createImage(vhd, { format: 'vhd-dynamic', virtualSize: BigInt(28 * MIB) });
    const f = await format(img.virtualSize, { version: 2, keyBits: 512, sectorSize: 4096, kdf: KDF_RANDOM_SECRET, passphrase: PASS });
    key = f.volumeKey;
    dataOffset = f.info.dataOffset;
    await img.write(0n, f.header);
    await img.close();
    const passFile = join(tmp.dir, 'pass');
    await writeFile(passFile, PASS);
    server = new NbdServer(await openExportBacking(vhd, { passphraseFile: passFile }));
    uri = await server.listen({ socketPath: join(tmp.dir, 'nbd.sock') });
    const size = Number((await runOk('nbdinfo', ['--size', uri])).stdout.toString().trim());
    model = randomBytes(size);
    const src = join(tmp.dir, 'src.raw');
    await writeFile(src, model);
    await runOk('nbdcopy', [src, uri]);
  });
  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  async function exportBytes(): Promise<Buffer> {
    const out = join(tmp.dir, 'out.raw');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    return readFile(out);
  }
  async function holes(): Promise<Array<[number, number]>> {
    const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri])).stdout.toString()) as Array<{ offset: number; length: number; type: number }>;
    return map.filter((e) => (e.type & 1) === 1).map((e) => [e.offset, e.offset + e.length]);
  }
  async function decryptedOnDisk(): Promise<Buffer> {
    const raw = join(tmp.dir, 'container.raw');
    await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, raw]);
    const buf = (await readFile(raw)).subarray(Number(dataOffset), Number(dataOffset) + model.length);
    const out = Buffer.alloc(model.length);
    for (let at = 0; at < buf.length; at += 4096) {
      const s = buf.subarray(at, at + 4096);
      if (!s.every((b) => b === 0)) xtsPlain64(false, key, s, 4096, BigInt(at / 512), 8n).copy(out, at);
    }
    return out;
  }

  it('starts fully allocated', async () => {
    expect(await holes()).toEqual([]);
    expect((await exportBytes()).equals(model)).toBe(true);
  });

  it('zero (may trim), zero with NO_HOLE, unaligned zero, trim, then a partial write into a trimmed block', async () => {
    const py = [
      `h.zero(${2 * MIB}, ${2 * MIB})`, // the whole VHD block at payload 2 MiB (container 18 MiB)
      `h.zero(1000, ${5 * MIB + 77})`, // a partial range: encrypted zeros, neighbours kept
      `h.zero(${2 * MIB}, ${6 * MIB}, nbd.CMD_FLAG_NO_HOLE)`, // zeros, but stays allocated
      `h.trim(${2 * MIB + 8192}, ${8 * MIB - 4096})`, // covers the block at 8 MiB whole, plus partial edges (ignored)
      'h.flush()',
    ].join('\n');
    await runOk('nbdsh', ['-u', uri, '-c', py]);
    model.fill(0, 2 * MIB, 4 * MIB);
    model.fill(0, 5 * MIB + 77, 5 * MIB + 77 + 1000);
    model.fill(0, 6 * MIB, 8 * MIB);
    model.fill(0, 8 * MIB, 10 * MIB);
    const h = await holes();
    expect(h).toContainEqual([2 * MIB, 4 * MIB]);
    expect(h).toContainEqual([8 * MIB, 10 * MIB]);
    expect(h.some(([s, e]) => s < 8 * MIB && e > 6 * MIB)).toBe(false); // NO_HOLE kept 6-8 MiB allocated
    const got = await exportBytes();
    // TRIM's partial edges are unspecified content (proto.md NBD_CMD_TRIM); everything else is exact.
    expect(got.subarray(0, 8 * MIB - 4096).equals(model.subarray(0, 8 * MIB - 4096))).toBe(true);
    expect(got.subarray(8 * MIB, 10 * MIB).every((b) => b === 0)).toBe(true);
    expect(got.subarray(10 * MIB + 8192).equals(model.subarray(10 * MIB + 8192))).toBe(true);

    // A 100-byte write into the deallocated block: the rest of that block must still read as zeros.
    await runOk('nbdsh', ['-u', uri, '-c', `h.pwrite(b"\\x77" * 100, ${9 * MIB + 10})`]);
    const after = await exportBytes();
    const block = Buffer.alloc(2 * MIB);
    block.fill(0x77, MIB + 10, MIB + 110);
    expect(after.subarray(8 * MIB, 10 * MIB).equals(block)).toBe(true);
    expect(await holes()).not.toContainEqual([8 * MIB, 10 * MIB]);
    model.set(block, 8 * MIB);
    model.set(got.subarray(8 * MIB - 4096, 8 * MIB), 8 * MIB - 4096);
    model.set(got.subarray(10 * MIB, 10 * MIB + 8192), 10 * MIB);
    expect((await decryptedOnDisk()).equals(model)).toBe(true);
  });
});
