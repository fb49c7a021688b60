import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createXts } from '../src/crypto/index.js';
import { EncryptedBacking, NbdServer } from '../src/nbd/index.js';
import { plainLayout } from '../src/volume/index.js';
import { DirectReadFile } from '../src/nbd/direct-replies.js';
import { makeTempDir, runOk } from './helpers/nbd-harness.js';
import { openRawFile } from './helpers/nbd-raw-file.js';
import { xtsPlain64 } from './helpers/xts-plain64.js';

/** The byte pattern both the test and the nbdsh script generate for a write. */
function pattern(seed: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i * 7 + (i >> 8)) & 255;
  return b;
}
const PY_PATTERN = 'def pattern(seed, n):\n    return bytes((seed + i * 7 + (i >> 8)) & 255 for i in range(n))\n';

// 'direct': READs answered by the native reply thread (the server's path for raw and fixed VHD containers).
describe.each([
  [512, 'main thread'],
  [4096, 'main thread'],
  [512, 'direct'],
  [4096, 'direct'],
] as const)('encrypted backing, plain layout, %i-byte sectors, reads on the %s', (sectorSize, path) => {
  const SIZE = 4 * 1024 * 1024;
  const key = randomBytes(64);
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let server: NbdServer;
  let uri: string;
  let model: Buffer;
  let file: string;

  beforeAll(async () => {
    tmp = await makeTempDir();
    model = randomBytes(SIZE);
    file = join(tmp.dir, 'disk.enc');
    await writeFile(file, xtsPlain64(true, key, model, sectorSize, 0n, BigInt(sectorSize / 512)));
    const xts = createXts(key);
    const directFile = path === 'direct' ? DirectReadFile.open(file, key, xts.kernel) : null;
    if (path === 'direct') expect(directFile).not.toBeNull();
    const backing = await EncryptedBacking.open(await openRawFile(file), xts, plainLayout(BigInt(SIZE), sectorSize), directFile ? { directFile } : {});
    server = new NbdServer(backing);
    uri = await server.listen({ socketPath: join(tmp.dir, 'nbd.sock') });
  });
  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  async function exportBytes(): Promise<Buffer> {
    const out = join(tmp.dir, `out-${Date.now()}.raw`);
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    return readFile(out);
  }
  async function fileDecrypted(): Promise<Buffer> {
    return xtsPlain64(false, key, await readFile(file), sectorSize, 0n, BigInt(sectorSize / 512));
  }

  it('qemu-img reads the plaintext node:crypto encrypted', async () => {
    expect((await exportBytes()).equals(model)).toBe(true);
  });

  it('unaligned writes (sequential and concurrent in the same sectors) match an independent model', async () => {
    const ops: Array<[number, number, number]> = [];
    // Sequential, overlapping, unaligned.
    for (let i = 0; i < 60; i++) {
      const off = Math.floor(Math.random() * (SIZE - 10000));
      const len = 1 + Math.floor(Math.random() * 9000);
      ops.push([off, len, i]);
    }
    for (const [off, len, seed] of ops) pattern(seed, len).copy(model, off);
    // Concurrent: disjoint 100-byte pieces inside the same few sectors, all in flight at once.
    const conc: Array<[number, number, number]> = [];
    for (let k = 0; k < 80; k++) conc.push([3 * sectorSize + 37 + k * 100, 100, 200 + (k % 50)]);
    for (const [off, len, seed] of conc) pattern(seed, len).copy(model, off);
    const script = join(tmp.dir, 'ops.py');
    await writeFile(
      script,
      PY_PATTERN +
        `seq = ${JSON.stringify(ops)}\nconc = ${JSON.stringify(conc)}\n` +
        'for off, n, seed in seq:\n    h.pwrite(pattern(seed, n), off)\n' +
        'cookies = [h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(pattern(seed, n))), off) for off, n, seed in conc]\n' +
        'while h.aio_in_flight() > 0:\n    h.poll(-1)\n' +
        'for c in cookies:\n    assert h.aio_command_completed(c)\n' +
        'h.flush()\n',
    );
    await runOk('nbdsh', ['-u', uri, '-c', `exec(open(${JSON.stringify(script)}).read())`]);
    expect((await exportBytes()).equals(model)).toBe(true);
    expect((await fileDecrypted()).equals(model)).toBe(true);
  });

  it('qemu-io write is visible in a fresh read and on disk, the rest intact', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', uri]);
    model.fill(0x5a, 1024 * 1024, 1024 * 1024 + 65536);
    expect((await exportBytes()).equals(model)).toBe(true);
    expect((await fileDecrypted()).equals(model)).toBe(true);
  });
});
