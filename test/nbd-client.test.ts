import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient, NbdError, openNbdImage, type NbdImage } from '../src/nbd/index.js';
import { makeTempDir, runOk, startServer } from './helpers/nbd-harness.js';
import { startServe } from './helpers/nbd-serve-cli.js';

async function readAll(img: NbdImage): Promise<Buffer> {
  const out = Buffer.alloc(Number(img.virtualSize));
  await img.read(0n, out);
  return out;
}

async function collectExtents(img: NbdImage) {
  const list: Array<{ offset: bigint; length: bigint; allocated: boolean }> = [];
  for await (const e of img.extents()) list.push(e);
  return list;
}

/** Every extent marked unallocated reads as zeros, and the extents tile the disk. */
function checkExtents(list: Array<{ offset: bigint; length: bigint; allocated: boolean }>, data: Buffer): void {
  let pos = 0n;
  for (const e of list) {
    expect(e.offset).toBe(pos);
    if (!e.allocated) expect(data.subarray(Number(e.offset), Number(e.offset + e.length)).every((b) => b === 0)).toBe(true);
    pos += e.length;
  }
  expect(pos).toBe(BigInt(data.length));
}

describe('NBD client against real servers', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    tmp = await makeTempDir();
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('nbdkit memory 64M: holes skipped, written data read back', async () => {
    const sock = join(tmp.dir, 'mem.sock');
    const srv = await startServer('nbdkit', ['--foreground', '--exit-with-parent', '-U', sock, 'memory', '64M'], sock);
    try {
      const uri = `nbd+unix:///?socket=${sock}`;
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 4M 1M', '-c', 'write -P 0x22 40M 128k', uri]);
      const img = await openNbdImage(uri);
      try {
        expect(img.virtualSize).toBe(64n * 1024n * 1024n);
        const data = await readAll(img);
        const model = Buffer.alloc(64 * 1024 * 1024);
        model.fill(0x11, 4 << 20, 5 << 20);
        model.fill(0x22, 40 << 20, (40 << 20) + 131072);
        expect(data.equals(model)).toBe(true);
        const ext = await collectExtents(img);
        checkExtents(ext, data);
        const allocated = ext.filter((e) => e.allocated).reduce((n, e) => n + e.length, 0n);
        expect(allocated).toBeGreaterThanOrEqual(1024n * 1024n + 131072n);
        expect(allocated).toBeLessThan(8n * 1024n * 1024n); // most of the 64 MiB is skipped
      } finally {
        await img.close();
      }
    } finally {
      await srv.stop();
    }
  });

  it('nbdkit file on a sparse file', async () => {
    const file = join(tmp.dir, 'sparse.raw');
    const fh = await open(file, 'w');
    const chunk = randomBytes(300_000);
    await fh.truncate(32 * 1024 * 1024);
    await fh.write(chunk, 0, chunk.length, 10 * 1024 * 1024 + 123);
    await fh.close();
    const sock = join(tmp.dir, 'file.sock');
    const srv = await startServer('nbdkit', ['--foreground', '--exit-with-parent', '-r', '-U', sock, 'file', file], sock);
    try {
      const img = await openNbdImage(`nbd+unix:///?socket=${sock}`);
      try {
        const data = await readAll(img);
        expect(data.equals(await readFile(file))).toBe(true);
        const ext = await collectExtents(img);
        checkExtents(ext, data);
        expect(ext.some((e) => !e.allocated)).toBe(true);
      } finally {
        await img.close();
      }
    } finally {
      await srv.stop();
    }
  });

  it('qemu-nbd -f vpc on a dynamic VHD', async () => {
    const vhd = join(tmp.dir, 'dyn.vhd');
    await runOk('qemu-img', ['create', '-f', 'vpc', '-o', 'subformat=dynamic', vhd, '48M']);
    await runOk('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x33 3M 2M', '-c', 'write -P 0x44 30M 512k', vhd]);
    const expected = join(tmp.dir, 'dyn.raw');
    await runOk('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, expected]);
    const sock = join(tmp.dir, 'qn.sock');
    const srv = await startServer('qemu-nbd', ['-f', 'vpc', '-r', '-t', '--socket', sock, vhd], sock);
    try {
      const img = await openNbdImage(`nbd+unix:///?socket=${sock}`);
      try {
        expect(img.virtualSize).toBe(BigInt((await readFile(expected)).length));
        const data = await readAll(img);
        expect(data.equals(await readFile(expected))).toBe(true);
        checkExtents(await collectExtents(img), data);
      } finally {
        await img.close();
      }
    } finally {
      await srv.stop();
    }
  });

  it('unknown export and unreachable server are typed errors', async () => {
    const sock = join(tmp.dir, 'named.sock');
    const file = join(tmp.dir, 'one.raw');
    await writeFile(file, Buffer.alloc(1024 * 1024, 7));
    const srv = await startServer('qemu-nbd', ['-f', 'raw', '-r', '-t', '-x', 'only', '--socket', sock, file], sock);
    try {
      await expect(NbdClient.connect(`nbd+unix:///other?socket=${sock}`)).rejects.toMatchObject({ code: 'NBD_EXPORT_UNKNOWN' });
      const c = await NbdClient.connect(`nbd+unix:///only?socket=${sock}`);
      expect(c.size).toBe(1024n * 1024n);
      await expect(c.read(1024n * 1024n - 10n, new Uint8Array(20))).rejects.toBeInstanceOf(NbdError);
      await c.close();
    } finally {
      await srv.stop();
    }
    await expect(openNbdImage(`nbd+unix:///?socket=${join(tmp.dir, 'nobody.sock')}`)).rejects.toMatchObject({ code: 'NBD_CONNECT_FAILED' });
    await expect(openNbdImage('http://example/')).rejects.toMatchObject({ code: 'NBD_BAD_URI' });
  });

  it('vhdcrypt encrypt reads an NBD source, skipping its holes; vhdcrypt serve gives the data back', async () => {
    const sock = join(tmp.dir, 'src.sock');
    const srv = await startServer('nbdkit', ['--foreground', '--exit-with-parent', '-U', sock, 'memory', '32M'], sock);
    const uri = `nbd+unix:///?socket=${sock}`;
    const pass = join(tmp.dir, 'pass');
    await writeFile(pass, 'nbd source test\n');
    const dst = join(tmp.dir, 'from-nbd.vhd');
    let source: Buffer;
    try {
      await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5e 6M 300k', uri]);
      source = Buffer.alloc(32 * 1024 * 1024);
      source.fill(0x5e, 6 * 1024 * 1024, 6 * 1024 * 1024 + 300 * 1024);
      const r = await runOk(process.execPath, [join(__dirname, '..', 'bin', 'vhdcrypt.cjs'), 'encrypt', uri, dst, '--passphrase-file', pass, '--out-format', 'vhd-dynamic', '--json']);
      const summary = JSON.parse(r.stdout.toString());
      expect(summary.sourceVirtualSize).toBe(32 * 1024 * 1024);
      expect(summary.bytesProcessed).toBeLessThan(8 * 1024 * 1024); // holes of the export were skipped
    } finally {
      await srv.stop();
    }
    const served = await startServe([dst, '--passphrase-file', pass, '--read-only', '--socket', join(tmp.dir, 'back.sock')]);
    try {
      const back = await openNbdImage(served.uri);
      try {
        expect((await readAll(back)).equals(source)).toBe(true);
      } finally {
        await back.close();
      }
    } finally {
      await served.stop();
    }
  });
});
