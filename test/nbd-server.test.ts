import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageBacking, NbdServer, type ContainerImage } from '../src/nbd/index.js';
import { makeTempDir, run, runOk } from './helpers/nbd-harness.js';

/** A raw file as a ContainerImage (every byte allocated), until the image layer's openImage is used. */
async function openRawFile(path: string): Promise<ContainerImage> {
  const fh: FileHandle = await open(path, 'r+');
  const size = BigInt((await fh.stat()).size);
  return {
    format: 'raw',
    virtualSize: size,
    async *extents() {
      yield { offset: 0n, length: size, allocated: true };
    },
    async read(offset, into) {
      await fh.read(into, 0, into.length, Number(offset));
    },
    async write(offset, data) {
      await fh.write(data, 0, data.length, Number(offset));
    },
    async flush() {
      await fh.sync();
    },
    async close() {
      await fh.close();
    },
  };
}

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
    const image = await openRawFile(join(tmp.dir, 'disk.raw'));
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
