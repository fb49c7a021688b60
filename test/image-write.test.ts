/**
 * Writing: concurrent allocation, discard, raw sparseness, writable opens of
 * existing images. Results are checked by qemu reading the files.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImage, openImage } from '../src/image/index.js';
import { allocatedOf, patternBytes, qemuDataRanges, readAll, tempDir, tool } from './image-helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

const MiB = 1024 * 1024;

async function qemuRaw(file: string): Promise<Buffer> {
  await tool('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, file + '.raw']);
  return readFile(file + '.raw');
}

describe('dynamic writes', () => {
  it('64 concurrent writes into the same few unallocated blocks allocate each block once', async () => {
    const file = path.join(dir, 'conc.vhd');
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: 8n * BigInt(MiB) });
    const model = Buffer.alloc(8 * MiB);
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const off = ((i * 7919) % 64) * 128 * 1024; // permuted 128 KiB slots over 8 MiB
      const data = patternBytes(128 * 1024, i + 1);
      model.set(data, off);
      jobs.push(img.write(BigInt(off), data));
    }
    await Promise.all(jobs);
    await img.close();
    expect((await stat(file)).size).toBe(512 + 1024 + 512 + 4 * (512 + 2 * MiB) + 512);
    expect((await qemuRaw(file)).equals(model)).toBe(true);
  });

  it('discard deallocates whole blocks, zeros partial ones; qemu reads zeros and can still allocate', async () => {
    const file = path.join(dir, 'discard.vhd');
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: 10n * BigInt(MiB) });
    const model = Buffer.from(patternBytes(10 * MiB, 5));
    await img.write(0n, model);
    await img.discard(2n * BigInt(MiB), 4n * BigInt(MiB)); // blocks 1 and 2 whole
    await img.discard(7n * BigInt(MiB) + 1000n, 5000n); // inside block 3
    model.fill(0, 2 * MiB, 6 * MiB);
    model.fill(0, 7 * MiB + 1000, 7 * MiB + 6000);
    expect((await readAll(img)).equals(model)).toBe(true);
    expect(await allocatedOf(img)).toEqual([[0, 2 * MiB], [6 * MiB, 10 * MiB]]);
    await img.close();
    expect((await qemuRaw(file)).equals(model)).toBe(true);
    expect(await qemuDataRanges(file, 'vpc')).toEqual([[0, 2 * MiB], [6 * MiB, 10 * MiB]]);
    // qemu allocates a block after the leaked space and nothing of ours is overwritten.
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0x7e 3M 4k', file]);
    model.fill(0x7e, 3 * MiB, 3 * MiB + 4096);
    const back = await openImage(file);
    expect((await readAll(back)).equals(model)).toBe(true);
    await back.close();
  });

  it('a block re-allocated over space a discard leaked reads zeros around new data', async () => {
    const file = path.join(dir, 'reuse.vhd');
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: 8n * BigInt(MiB) });
    await img.write(0n, patternBytes(4 * MiB, 11)); // blocks 0 and 1, block 1 last in the file
    await img.discard(2n * BigInt(MiB), 2n * BigInt(MiB));
    await img.close();
    // Reopened, the next block goes where block 1 was (as qemu would place it): old bytes must not show.
    const again = await openImage(file, { writable: true });
    await again.write(6n * BigInt(MiB) + 4096n, new Uint8Array(512).fill(0xee));
    await again.close();
    const model = Buffer.alloc(8 * MiB);
    model.set(patternBytes(2 * MiB, 11), 0);
    model.fill(0xee, 6 * MiB + 4096, 6 * MiB + 4608);
    expect((await qemuRaw(file)).equals(model)).toBe(true);
  });

  it('all-zero writes leave blocks unallocated; a differencing discard reads zeros over parent data', async () => {
    const base = path.join(dir, 'zb.vhd');
    const img = await createImage(base, { format: 'vhd-dynamic', virtualSize: 4n * BigInt(MiB) });
    await img.write(0n, new Uint8Array(4 * MiB));
    expect(await allocatedOf(img)).toEqual([]);
    await img.write(BigInt(MiB), new Uint8Array(512).fill(1));
    await img.close();
    const child = await createImage(path.join(dir, 'zc.vhd'), { format: 'vhd-differencing', parent: base });
    await child.discard(BigInt(MiB), 512n);
    const b = new Uint8Array(512);
    await child.read(BigInt(MiB), b);
    expect(b.every((x) => x === 0)).toBe(true);
    await child.close();
  });
});

describe('dynamic blocks filled side by side', () => {
  /**
   * A block's space (and the end footer) is taken under the allocation lock; its bitmap, data and BAT entry are
   * written outside it, so unallocated blocks written at once have their data writes in flight together. Seen in
   * the system calls (strace) of a child process that writes eight whole blocks of a new dynamic VHD at once: the
   * spaces of several blocks are taken (each one's end footer written, the first 512-byte write at a new offset)
   * before the first block's BAT entry is written. One block at a time (the whole allocation under the lock, its
   * footer, bitmap, data and BAT entry), exactly one space is taken by then.
   */
  it('eight blocks written at once: several blocks take their space before the first BAT entry; qemu reads them back', async () => {
    const { spawnSync } = await import('node:child_process');
    const { existsSync } = await import('node:fs');
    const root = path.join(import.meta.dirname, '..');
    const lib = path.join(root, 'dist', 'src', 'image', 'index.js');
    if (!existsSync(lib) && spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'ignore' }).status !== 0) throw new Error('npm run build failed');
    if (spawnSync('strace', ['-f', '-o', '/dev/null', 'true']).status !== 0) throw new Error('strace cannot trace here; it is in .ci/run\'s package list');
    const file = path.join(dir, 'side-by-side.vhd');
    const log = path.join(dir, 'side-by-side.strace');
    const child = `const { createImage } = await import(${JSON.stringify(lib)});
      const img = await createImage(${JSON.stringify(file)}, { format: 'vhd-dynamic', virtualSize: ${16 * MiB}n });
      await Promise.all(Array.from({ length: 8 }, (_, i) => img.write(BigInt(i * ${2 * MiB}), new Uint8Array(${2 * MiB}).fill(i + 1))));
      await img.close();`;
    const r = spawnSync('strace', ['-f', '-o', log, '-e', 'trace=pwrite64', process.execPath, '--input-type=module', '-e', child], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // Entry lines, in the order the calls started: pwrite64(fd, buf, count, offset ...
    const calls = (await readFile(log, 'utf8')).split('\n').flatMap((l) => {
      const m = /pwrite64\(\d+, .*?, (\d+), (\d+)[,)< ]/.exec(l);
      return m && !l.includes('resumed>') ? [{ count: Number(m[1]), offset: Number(m[2]) }] : [];
    });
    const firstBat = calls.findIndex((c) => c.count === 4);
    expect(firstBat, JSON.stringify(calls.slice(0, 40))).toBeGreaterThan(0);
    // createImage's own writes come first (footer, dynamic header, BAT, end footer): the spaces start past them.
    const seen = new Set<number>();
    const firstAt = calls.slice(0, firstBat).filter((c) => c.count === 512 && !seen.has(c.offset) && seen.add(c.offset));
    const initialEnd = Math.max(...calls.slice(0, 4).map((c) => c.offset));
    const spacesTaken = firstAt.filter((c) => c.offset > initialEnd).length;
    expect(spacesTaken, JSON.stringify(calls.slice(0, 40))).toBeGreaterThan(1);
    expect(calls.filter((c) => c.count === 4)).toHaveLength(8);
    const model = Buffer.concat(Array.from({ length: 8 }, (_, i) => Buffer.alloc(2 * MiB, i + 1)));
    expect((await qemuRaw(file)).equals(model)).toBe(true);
  });
});

describe('raw and fixed', () => {
  it('raw: holes are kept for all-zero chunks; data and explicit zeros over data are written', async () => {
    const file = path.join(dir, 'sparse.raw');
    const img = await createImage(file, { format: 'raw', virtualSize: 64n * BigInt(MiB) });
    const data = Buffer.alloc(64 * MiB);
    data.set(patternBytes(100_000, 3), 10 * MiB);
    for (let o = 0; o < 64 * MiB; o += 4 * MiB) await img.write(BigInt(o), data.subarray(o, o + 4 * MiB));
    // Zeros over earlier data must land even in a fresh file.
    await img.write(10n * BigInt(MiB), new Uint8Array(65536));
    data.fill(0, 10 * MiB, 10 * MiB + 65536);
    await img.close();
    const st = await stat(file);
    expect(st.size).toBe(64 * MiB);
    expect(st.blocks * 512).toBeLessThan(1 * MiB);
    expect((await readFile(file)).equals(data)).toBe(true);
  });

  it('raw: discarding the tail frees its blocks; discards of never-written chunks write nothing', async () => {
    const file = path.join(dir, 'tail.raw');
    const img = await createImage(file, { format: 'raw', virtualSize: 32n * BigInt(MiB) });
    const data = Buffer.from(patternBytes(32 * MiB, 21));
    await img.write(0n, data);
    await img.flush();
    const before = (await stat(file)).blocks;
    await img.discard(16n * BigInt(MiB), 16n * BigInt(MiB));
    await img.discard(BigInt(MiB) + 100n, 1000n);
    data.fill(0, 16 * MiB);
    data.fill(0, MiB + 100, MiB + 1100);
    await img.close();
    const st = await stat(file);
    expect(st.size).toBe(32 * MiB);
    expect(st.blocks).toBeLessThan(before * 0.6);
    expect((await readFile(file)).equals(data)).toBe(true);
    // A fresh file: discarding the never-written middle leaves it a hole.
    const fresh = await createImage(path.join(dir, 'fresh.raw'), { format: 'raw', virtualSize: 64n * BigInt(MiB) });
    await fresh.write(0n, new Uint8Array(4096).fill(1));
    await fresh.discard(BigInt(MiB), 32n * BigInt(MiB));
    await fresh.close();
    expect((await stat(path.join(dir, 'fresh.raw'))).blocks * 512).toBeLessThan(MiB);
  });

  it('raw opened writable: zeros are written (no knowledge of holes), discard reads zeros', async () => {
    const file = path.join(dir, 'exist.raw');
    await writeFile(file, Buffer.from(patternBytes(MiB, 8)));
    const img = await openImage(file, { writable: true });
    expect(img.format).toBe('raw');
    await img.write(0n, new Uint8Array(4096));
    await img.discard(8192n, 8192n);
    await img.close();
    const b = await readFile(file);
    expect(b.subarray(0, 4096).every((x) => x === 0)).toBe(true);
    expect(b.subarray(8192, 16384).every((x) => x === 0)).toBe(true);
    expect(b.subarray(4096, 8192).equals(Buffer.from(patternBytes(MiB, 8)).subarray(4096, 8192))).toBe(true);
  });

  it('fixed VHD opened writable: qemu sees our writes; the footer is untouched', async () => {
    const file = path.join(dir, 'fx.vhd');
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', file, String(4 * MiB)]);
    const footer = (await readFile(file)).subarray(4 * MiB);
    const img = await openImage(file, { writable: true });
    await img.write(4096n + 3n, Buffer.from('hello'));
    await img.close();
    const raw = await qemuRaw(file);
    expect(raw.subarray(4099, 4104).toString()).toBe('hello');
    expect((await readFile(file)).subarray(4 * MiB).equals(footer)).toBe(true);
  });
});

describe('early writeback', () => {
  it('reaches sync_file_range: accepted for a file, refused (EBADF) for a descriptor that is not open', async () => {
    const { startWriteback } = await import('../src/image/native-io.js');
    const { openSync, writeSync, closeSync } = await import('node:fs');
    const file = path.join(dir, 'writeback.bin');
    const fd = openSync(file, 'w');
    writeSync(fd, patternBytes(4 * MiB, 7));
    expect(startWriteback(fd)).toBe(true);
    closeSync(fd);
    expect(startWriteback(2_000_000_000)).toBe(false);
  });

  it('an image keeps its bytes when writeback is started between writes', async () => {
    const file = path.join(dir, 'wb.vhd');
    const img = await createImage(file, { format: 'vhd-fixed', virtualSize: BigInt(8 * MiB) });
    const data = patternBytes(8 * MiB, 3);
    await img.write(0n, data.subarray(0, 4 * MiB));
    img.startWriteback();
    await img.write(BigInt(4 * MiB), data.subarray(4 * MiB));
    img.startWriteback();
    await img.close();
    expect(Buffer.compare(await qemuRaw(file), Buffer.from(data))).toBe(0);
  });
});

describe('fileSpan: where a range lies in the image file', () => {
  it('dynamic VHD written by qemu-io: bytes at the span are the virtual bytes; holes, block crossings and differencing give null', async () => {
    const file = path.join(dir, 'span.vhd');
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', file, String(16 * MiB)]);
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x3c 4M 2M', '-c', 'write -P 0x7e 10M 4096', file]);
    const img = await openImage(file);
    const bytes = await readFile(file);
    for (const [off, len] of [[4 * MiB, 2 * MiB], [4 * MiB + 512, 65536], [10 * MiB, 4096]] as const) {
      const at = img.fileSpan(BigInt(off), len);
      expect(at).not.toBeNull();
      const virt = new Uint8Array(len);
      await img.read(BigInt(off), virt);
      expect(Buffer.compare(bytes.subarray(at!, at! + len), Buffer.from(virt))).toBe(0);
    }
    expect(img.fileSpan(0n, 4096)).toBeNull(); // never written: a hole
    expect(img.fileSpan(BigInt(6 * MiB - 512), 1024)).toBeNull(); // crosses into the next (unallocated) block
    expect(img.fileSpan(BigInt(16 * MiB - 512), 1024)).toBeNull(); // past the end
    await img.close();
    const child = path.join(dir, 'span-child.vhd');
    const d = await createImage(child, { format: 'vhd-differencing', parent: file });
    await d.write(BigInt(4 * MiB), new Uint8Array(4096).fill(1));
    expect(d.fileSpan(BigInt(4 * MiB), 4096)).toBeNull(); // a child's sectors may live in its parent
    await d.close();
  });

  it('fixed VHD: the virtual offset itself', async () => {
    const file = path.join(dir, 'span-fixed.vhd');
    const img = await createImage(file, { format: 'vhd-fixed', virtualSize: BigInt(4 * MiB) });
    expect(img.fileSpan(12345n, 100)).toBe(12345);
    expect(img.fileSpan(BigInt(4 * MiB - 50), 100)).toBeNull();
    await img.close();
  });
});

describe('direct writes (O_DIRECT)', () => {
  /** Skip (saying why) where the temp directory's file system refuses O_DIRECT (tmpfs before Linux 6.6). */
  async function needDirectIo(ctx: { skip: (note?: string) => void }): Promise<void> {
    const { openSync, closeSync, constants, rmSync } = await import('node:fs');
    const probe = path.join(dir, 'o_direct.probe');
    try {
      closeSync(openSync(probe, constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT, 0o600));
    } catch {
      ctx.skip(`${dir}: this file system refuses O_DIRECT`);
    } finally {
      rmSync(probe, { force: true });
    }
  }

  /** Bytes of `file` in the page cache, from util-linux fincore (a tool that is not ours). */
  async function cachedBytes(file: string): Promise<number> {
    const out = await tool('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
    return Number(out.toString().trim());
  }

  it('aligned batch slots go past the page cache, unaligned views are written buffered, every byte lands', async (ctx) => {
    await needDirectIo(ctx);
    const { SlotRing } = await import('../src/engine/pool/slot-ring.js');
    const { addressMisalignment } = await import('../src/image/index.js');
    const file = path.join(dir, 'direct.vhd');
    const size = 16 * MiB;
    const img = await createImage(file, { format: 'vhd-fixed', virtualSize: BigInt(size) });
    expect(await img.useDirectWrites()).toBe(true);
    const model = patternBytes(size, 11);
    // Two 4 MiB slots of the engine's ring: their addresses are 4096-aligned.
    const ring = new SlotRing(2, 4 * MiB);
    const a = await ring.acquire();
    const b = await ring.acquire();
    expect(addressMisalignment(a.view(16), 4096)).toBe(0);
    a.view(4 * MiB).set(model.subarray(0, 4 * MiB));
    b.view(4 * MiB).set(model.subarray(8 * MiB, 12 * MiB));
    await Promise.all([img.write(0n, a.view(4 * MiB)), img.write(BigInt(8 * MiB), b.view(4 * MiB))]);
    // Misaligned address (a view at byte 1 of its buffer), and an unaligned offset: both take the buffered path.
    const odd = new Uint8Array(4 * MiB + 1);
    odd.set(model.subarray(4 * MiB, 8 * MiB), 1);
    await img.write(BigInt(4 * MiB), odd.subarray(1));
    await img.write(BigInt(12 * MiB + 100), model.subarray(12 * MiB + 100, 16 * MiB));
    await img.write(BigInt(12 * MiB), model.subarray(12 * MiB, 12 * MiB + 100));
    await img.flush();
    // The 8 MiB written directly are not in the page cache; the 8 MiB written buffered are.
    const cached = await cachedBytes(file);
    expect(cached).toBeGreaterThanOrEqual(7 * MiB);
    expect(cached).toBeLessThan(10 * MiB);
    await img.close();
    expect(Buffer.compare(await qemuRaw(file), Buffer.from(model))).toBe(0);
  });

  it('dynamic VHD: blocks allocated with direct writes on have page-aligned data; whole pages go direct; qemu reads every byte', async (ctx) => {
    await needDirectIo(ctx);
    const { SlotRing } = await import('../src/engine/pool/slot-ring.js');
    const file = path.join(dir, 'direct-dyn.vhd');
    const size = 16 * MiB;
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: BigInt(size) });
    expect(await img.useDirectWrites()).toBe(true);
    const model = new Uint8Array(size);
    const ring = new SlotRing(2, 4 * MiB);
    const a = await ring.acquire();
    const b = await ring.acquire();
    // Two blocks allocated by one aligned 4 MiB write, one more at 6 MiB, then an overwrite inside block 0.
    a.view(4 * MiB).set(patternBytes(4 * MiB, 21));
    await img.write(0n, a.view(4 * MiB));
    model.set(a.view(4 * MiB), 0);
    b.view(2 * MiB).set(patternBytes(2 * MiB, 22));
    await img.write(BigInt(6 * MiB), b.view(2 * MiB));
    model.set(b.view(2 * MiB), 6 * MiB);
    b.view(MiB).set(patternBytes(MiB, 23));
    await img.write(BigInt(512 * 1024), b.view(MiB));
    model.set(b.view(MiB), 512 * 1024);
    // Buffered: a misaligned view allocating block 5, and an unaligned offset inside block 3.
    const odd = new Uint8Array(MiB + 1);
    odd.set(patternBytes(MiB, 24), 1);
    await img.write(BigInt(10 * MiB), odd.subarray(1));
    model.set(odd.subarray(1), 10 * MiB);
    const tail = patternBytes(1000, 25);
    await img.write(BigInt(6 * MiB + 3), tail);
    model.set(tail, 6 * MiB + 3);
    for (const blk of [0, 1, 3, 5]) expect(img.fileSpan(BigInt(blk * 2 * MiB), 4096)! % 4096).toBe(0);
    await img.flush();
    // 8 MiB went direct (blocks 0, 1, 3); block 5's 1 MiB and a page of block 3 went through the cache.
    expect(await cachedBytes(file)).toBeLessThan(3 * MiB);
    await img.close();
    expect(Buffer.compare(await qemuRaw(file), Buffer.from(model))).toBe(0);
  });

  it('images that cannot (read-only, differencing) say so and write as before', async () => {
    const parent = path.join(dir, 'direct-parent.vhd');
    const dyn = await createImage(parent, { format: 'vhd-dynamic', virtualSize: BigInt(8 * MiB) });
    await dyn.close();
    const child = await createImage(path.join(dir, 'direct-child.vhd'), { format: 'vhd-differencing', parent });
    expect(await child.useDirectWrites()).toBe(false);
    await child.close();
    const ro = await openImage(parent);
    expect(await (ro as unknown as { useDirectWrites(): Promise<boolean> }).useDirectWrites()).toBe(false);
    await ro.close();
  });
});

describe('reserve (fallocate ahead of writes)', () => {
  /** Allocated bytes of `file` as the kernel reports them (st_blocks). */
  const used = async (file: string) => (await stat(file)).blocks * 512;

  it('fresh fixed VHD: reserved blocks exist before the writes; at close the never-written zero chunks are holes again', async () => {
    const file = path.join(dir, 'reserve.vhd');
    const size = 32 * MiB;
    const img = await createImage(file, { format: 'vhd-fixed', virtualSize: BigInt(size) });
    const before = await used(file);
    await img.reserve(0n, BigInt(size));
    expect((await stat(file)).size).toBe(size + 512); // the footer stays where it was
    expect((await used(file)) - before).toBeGreaterThanOrEqual(size);
    await img.useDirectWrites();
    // Data in the first 8 MiB and at 20 MiB; an all-zero 4 MiB write at 12 MiB (skipped, as in a fresh file).
    const model = new Uint8Array(size);
    model.set(patternBytes(8 * MiB, 31), 0);
    model.set(patternBytes(MiB, 32), 20 * MiB);
    await img.write(0n, model.subarray(0, 8 * MiB));
    await img.write(BigInt(12 * MiB), new Uint8Array(4 * MiB));
    await img.write(BigInt(20 * MiB), model.subarray(20 * MiB, 21 * MiB));
    await img.close();
    expect(await used(file)).toBeLessThan(10 * MiB);
    expect(await used(file)).toBeGreaterThanOrEqual(9 * MiB);
    expect((await qemuRaw(file)).equals(Buffer.from(model))).toBe(true);
  });

  it('an existing image: reserving keeps its size and every byte, and nothing is punched at close', async () => {
    const file = path.join(dir, 'reserve-existing.raw');
    const model = Buffer.alloc(16 * MiB);
    model.set(patternBytes(MiB, 33), 3 * MiB);
    await writeFile(file, model.subarray(0, 4 * MiB));
    await (await import('node:fs/promises')).truncate(file, 16 * MiB);
    const img = await openImage(file, { writable: true });
    await img.reserve(0n, 16n * BigInt(MiB));
    await img.close();
    expect((await stat(file)).size).toBe(16 * MiB);
    expect(await used(file)).toBeGreaterThanOrEqual(16 * MiB);
    expect((await readFile(file)).equals(model)).toBe(true);
  });

  it('checks its range; a dynamic VHD allocates as it writes, so reserving changes nothing', async () => {
    const file = path.join(dir, 'reserve-dyn.vhd');
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: BigInt(8 * MiB) });
    const before = await used(file);
    await img.reserve(0n, BigInt(8 * MiB));
    expect(await used(file)).toBe(before);
    await expect(img.reserve(BigInt(4 * MiB), BigInt(8 * MiB))).rejects.toMatchObject({ code: 'IMAGE_OUT_OF_RANGE' });
    await img.close();
  });

  it('on a full file system: rejects with ENOSPC before any data is written', async (ctx) => {
    const { spawnSync } = await import('node:child_process');
    const { mkdirSync } = await import('node:fs');
    const mnt = path.join(dir, 'tiny-reserve');
    mkdirSync(mnt);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]).status !== 0) ctx.skip(); // mount needs root
    try {
      const img = await createImage(path.join(mnt, 'big.raw'), { format: 'raw', virtualSize: BigInt(64 * MiB) });
      await expect(img.reserve(0n, BigInt(64 * MiB))).rejects.toMatchObject({ code: 'ENOSPC', syscall: 'fallocate' });
      await img.close();
    } finally {
      spawnSync('umount', [mnt]);
    }
  });

  it('WrittenChunks.unwrittenRuns: the complement of what was added, across page boundaries', async () => {
    const { WrittenChunks } = await import('../src/image/written-chunks.js');
    const w = new WrittenChunks();
    const span = 100_000; // three 32768-chunk pages and a part
    const set = new Set<number>();
    let seed = 7;
    for (let i = 0; i < 300; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const c = 32768 + (seed % 40_000); // leaves page 0 and most of page 2 untouched
      set.add(c);
      w.add(c);
    }
    for (const [from, to] of [[0, span], [5, 32770], [40_000, 70_000], [32767, 32769]] as const) {
      const got: number[] = [];
      for (const [a, b] of w.unwrittenRuns(from, to)) {
        expect(a).toBeLessThan(b);
        for (let c = a; c < b; c++) got.push(c);
      }
      const want: number[] = [];
      for (let c = from; c < to; c++) if (!set.has(c)) want.push(c);
      expect(got).toEqual(want);
    }
  });
});

describe('createImage on a file system that fills up', () => {
  it('a dynamic VHD whose BAT does not fit: the error surfaces and no half-made file is left', async (ctx) => {
    const { spawnSync } = await import('node:child_process');
    const { mkdirSync, readdirSync } = await import('node:fs');
    const mnt = path.join(dir, 'tiny');
    mkdirSync(mnt);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]).status !== 0) ctx.skip(); // mount needs root
    try {
      // 2 TiB in 2 MiB blocks: a 4 MiB BAT on a 1 MiB file system.
      await expect(createImage(path.join(mnt, 'big.vhd'), { format: 'vhd-dynamic', virtualSize: 2n << 40n })).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(readdirSync(mnt)).toEqual([]);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
