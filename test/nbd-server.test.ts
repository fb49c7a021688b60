import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage } from '../src/image/index.js';
import { ImageBacking, NbdServer } from '../src/nbd/index.js';
import { makeTempDir, run, runOk } from './helpers/nbd-harness.js';

describe('NBD server over a plaintext raw image', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let server: NbdServer;
  let uri: string;
  let sock: string;
  let plain: Buffer;
  const SIZE = 8 * 1024 * 1024;

  beforeAll(async () => {
    tmp = await makeTempDir();
    plain = randomBytes(SIZE);
    await writeFile(join(tmp.dir, 'disk.raw'), plain);
    const image = await openImage(join(tmp.dir, 'disk.raw'), { writable: true });
    server = new NbdServer(await ImageBacking.open(image));
    sock = join(tmp.dir, 'nbd.sock');
    uri = await server.listen({ socketPath: sock });
  });
  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('nbdinfo sees the export', async () => {
    const r = await runOk('nbdinfo', ['--json', uri]);
    const info = JSON.parse(r.stdout.toString());
    expect(info.exports[0]['export-size']).toBe(SIZE);
    expect(info.exports[0]['block_size_preferred']).toBe(4096);
  });

  it('qemu-img convert reads exactly the image', async () => {
    const out = join(tmp.dir, 'out.raw');
    await runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
    expect(Buffer.compare(await readFile(out), plain)).toBe(0);
  });

  it('qemu-io writes land in the image', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', uri]);
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 1M 64k', uri]);
    expect(r.stdout.toString()).not.toMatch(/fail|mismatch/i);
    expect(r.code).toBe(0);
  });
});

describe('NBD server over a plaintext dynamic VHD (qemu-made)', () => {
  it('serves the virtual disk, reports unallocated blocks as holes, writes allocate', async () => {
    const tmp = await makeTempDir();
    try {
      const vhd = join(tmp.dir, 'dyn.vhd');
      await runOk('qemu-img', ['create', '-f', 'vpc', '-o', 'subformat=dynamic', vhd, '40M']);
      await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x31 2M 2M', '-c', 'write -P 0x32 20M 100k', vhd]);
      const server = new NbdServer(await ImageBacking.open(await openImage(vhd, { writable: true })));
      const uri = await server.listen({ socketPath: join(tmp.dir, 'v.sock') });
      try {
        const expected = join(tmp.dir, 'expected.raw');
        await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, expected]);
        await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, expected]);
        const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri])).stdout.toString()) as Array<{ offset: number; length: number; type: number }>;
        const typeAt = (off: number) => map.find((e) => e.offset <= off && off < e.offset + e.length)!.type;
        expect(typeAt(0) & 3).toBe(3); // hole + zero
        expect(typeAt(2 * 1024 * 1024) & 1).toBe(0);
        expect(typeAt(30 * 1024 * 1024) & 3).toBe(3);
        await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 30M 4k', uri]);
        const map2 = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri])).stdout.toString()) as Array<{ offset: number; length: number; type: number }>;
        expect(map2.find((e) => e.offset <= 30 * 1024 * 1024 && 30 * 1024 * 1024 < e.offset + e.length)!.type & 1).toBe(0);
      } finally {
        await server.close();
      }
      const r = await runOk('qemu-io', ['-f', 'vpc', '-c', 'read -P 0x5a 30M 4k', '-c', 'read -P 0x31 2M 2M', vhd]);
      expect(r.stdout.toString()).not.toMatch(/fail|mismatch/i);
    } finally {
      await tmp.cleanup();
    }
  });
});
