/**
 * WRITE_ZEROES and TRIM on an encrypted raw or fixed-VHD container: such a
 * container cannot record a hole (its "discard" leaves zero bytes, which
 * decrypt to garbage), so zeroing must write encrypted zeros, with or without
 * NBD_CMD_FLAG_NO_HOLE, and BLOCK_STATUS must not report a hole. Checked
 * through the export, through a second server started on the same file, and
 * by decrypting the container file with node:crypto.
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
const PASS = 'flat zero test passphrase';

describe.each(['raw', 'vhd-fixed'] as const)('encrypted %s container: WRITE_ZEROES writes encrypted zeros', (fmt) => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let file: string;
  let passFile: string;
  let key: Uint8Array;
  let dataOffset: bigint;
  let server: NbdServer | null = null;
  let uri: string;
  let model: Buffer;

  async function start(): Promise<void> {
    server = new NbdServer(await openExportBacking(file, { passphraseFile: passFile }));
    uri = await server.listen({ socketPath: join(tmp.dir, 'nbd.sock') });
  }
  async function stop(): Promise<void> {
    await server?.close();
    server = null;
  }

  beforeAll(async () => {
    tmp = await makeTempDir();
    file = join(tmp.dir, fmt === 'raw' ? 'enc.raw' : 'enc.vhd');
    const img = await createImage(file, { format: fmt, virtualSize: BigInt(24 * MIB) });
    const f = await format(img.virtualSize, { version: 2, keyBits: 512, sectorSize: 4096, kdf: KDF_RANDOM_SECRET, passphrase: PASS });
    key = f.volumeKey;
    dataOffset = f.info.dataOffset;
    await img.write(0n, f.header);
    await img.close();
    passFile = join(tmp.dir, 'pass');
    await writeFile(passFile, PASS);
    await start();
    const size = Number((await runOk('nbdinfo', ['--size', uri])).stdout.toString().trim());
    model = randomBytes(size);
    const src = join(tmp.dir, 'src.raw');
    await writeFile(src, model);
    await runOk('nbdcopy', [src, uri]);
  });
  afterAll(async () => {
    await stop();
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
  /** Every sector of the payload decrypted, as a restarted server or cryptsetup would read it (a fixed VHD's data starts the file). */
  async function decryptedOnDisk(): Promise<Buffer> {
    const buf = (await readFile(file)).subarray(Number(dataOffset), Number(dataOffset) + model.length);
    return xtsPlain64(false, key, buf, 4096, 0n, 8n);
  }

  it('zero (may trim) and zero with NO_HOLE read as zeros, also after a restart and on disk; no hole is reported', async () => {
    const py = [
      `h.zero(${2 * MIB}, ${2 * MIB})`, // whole 64 KiB granules: the old code "deallocated" them (in memory only)
      `h.zero(${MIB}, ${5 * MIB}, nbd.CMD_FLAG_NO_HOLE)`,
      `h.zero(1000, ${7 * MIB + 77})`,
      'h.flush()',
    ].join('\n');
    await runOk('nbdsh', ['-u', uri, '-c', py]);
    model.fill(0, 2 * MIB, 4 * MIB);
    model.fill(0, 5 * MIB, 6 * MIB);
    model.fill(0, 7 * MIB + 77, 7 * MIB + 1077);
    expect(await holes()).toEqual([]);
    expect((await exportBytes()).equals(model)).toBe(true);
    await stop();
    expect((await decryptedOnDisk()).equals(model)).toBe(true);
    await start();
    expect((await exportBytes()).equals(model)).toBe(true);
  });

  it('TRIM is ignored (a hint): the data stays, before and after a restart', async () => {
    await runOk('nbdsh', ['-u', uri, '-c', `h.trim(${4 * MIB}, ${2 * MIB})\nh.flush()`]);
    expect(await holes()).toEqual([]);
    expect((await exportBytes()).equals(model)).toBe(true);
    await stop();
    expect((await decryptedOnDisk()).equals(model)).toBe(true);
    await start();
    expect((await exportBytes()).equals(model)).toBe(true);
  });
});
