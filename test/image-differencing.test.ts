/**
 * Differencing VHDs. qemu 7.2 cannot read them, so chains built by our writer
 * over a qemu-made base are checked against a plain byte model with every
 * write applied in order, and the child's on-disk structures are checked by a
 * second, minimal parser written here from the specification's tables.
 */
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImage, openImage, type WritableImage } from '../src/image/index.js';
import { allocatedOf, mergePush, patternBytes, qemuDataRanges, readAll, tempDir, tool } from './image-helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;

/** qemu-made dynamic base with data at scattered places; returns its bytes as qemu reads them. */
async function qemuBase(name: string): Promise<{ file: string; bytes: Buffer }> {
  const file = path.join(dir, name);
  await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', file, String(SIZE)]);
  await tool('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0xa1 0 3M', '-c', 'write -q -P 0xa2 8M 64k', '-c', 'write -q -P 0xa3 20M 4M', file]);
  await tool('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, file + '.raw']);
  return { file, bytes: await readFile(file + '.raw') };
}

/** Apply a write to the image and to the model. */
async function both(img: WritableImage, model: Buffer, off: number, data: Uint8Array): Promise<void> {
  await img.write(BigInt(off), data);
  model.set(data, off);
}

// ---- the second, minimal parser (VHD spec "Hard Disk Footer Format", "Dynamic Disk Header Format") ----
const be32 = (b: Buffer, o: number) => b.readUInt32BE(o);
const be64 = (b: Buffer, o: number) => b.readBigUInt64BE(o);
function specChecksum(b: Buffer, at: number): number {
  let s = 0;
  for (let i = 0; i < b.length; i++) if (i < at || i >= at + 4) s += b[i]!;
  return ~s >>> 0;
}
function hex(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

describe('differencing chains over a qemu-made base', () => {
  it('depth 1: partial blocks keep the parent, zeros over parent data read as zeros', async () => {
    const base = await qemuBase('base1.vhd');
    const model = Buffer.from(base.bytes);
    const childPath = path.join(dir, 'child1.vhd');
    const child = await createImage(childPath, { format: 'vhd-differencing', parent: base.file });
    expect(child.format).toBe('vhd-differencing');
    expect(child.virtualSize).toBe(BigInt(SIZE));
    await both(child, model, 4096, patternBytes(8192, 1)); // inside parent data, partial block
    await both(child, model, 5000, patternBytes(1000, 2)); // unaligned, over our own write
    await both(child, model, 2 * MiB - 700, patternBytes(1400, 3)); // unaligned, across a block boundary
    await both(child, model, 8 * MiB + 512, new Uint8Array(1024)); // zeros over parent data
    await both(child, model, 12 * MiB, patternBytes(2 * MiB, 4)); // a whole block where the parent has none
    await both(child, model, SIZE - 100, patternBytes(100, 5)); // the very end, unaligned
    expect((await readAll(child)).equals(model)).toBe(true);
    await child.close();

    const again = await openImage(childPath);
    try {
      expect(again.warnings).toEqual([]);
      expect(again.parent?.path).toBe(base.file);
      expect((await readAll(again)).equals(model)).toBe(true);
      expect((await readAll(again, 777 * 512 + 3)).equals(model)).toBe(true);
      // Allocated anywhere in the chain: qemu's map of the base united with the child's blocks.
      const want: Array<[number, number]> = [];
      const childBlocks = [0, 1, 4, 6, 11].map((b) => [b * 2 * MiB, (b + 1) * 2 * MiB] as [number, number]);
      const all = [...(await qemuDataRanges(base.file, 'vpc')), ...childBlocks].sort((a, b) => a[0] - b[0]);
      for (const [s, e] of all) mergePush(want, s, e);
      expect(await allocatedOf(again)).toEqual(want);
      // Windows (block-status queries) are the whole-disk answer clipped, contiguous, exactly covering the window.
      for (const [ws, we] of [[MiB + 512, 5 * MiB], [0, 512], [7 * MiB, 13 * MiB + 4096], [SIZE - 1024, SIZE]]) {
        const got: Array<[number, number, boolean]> = [];
        for await (const e of again.extents({ offset: BigInt(ws!), length: BigInt(we! - ws!) })) got.push([Number(e.offset), Number(e.offset + e.length), e.allocated]);
        expect(got[0]![0]).toBe(ws);
        expect(got[got.length - 1]![1]).toBe(we);
        for (let i = 1; i < got.length; i++) expect(got[i]![0]).toBe(got[i - 1]![1]);
        const clipped = want.map(([s, e]) => [Math.max(s, ws!), Math.min(e, we!)] as const).filter(([s, e]) => e > s);
        expect(got.filter((g) => g[2]).map(([s, e]) => [s, e])).toEqual(clipped);
      }
    } finally {
      await again.close();
    }

    // Every header field of the child, by the spec's tables.
    const f = await readFile(childPath);
    const baseFile = await readFile(base.file);
    const foot = f.subarray(f.length - 512);
    expect(foot.subarray(0, 8).toString('latin1')).toBe('conectix');
    expect(be32(foot, 8)).toBe(2); // features: reserved bit
    expect(be32(foot, 12)).toBe(0x00010000);
    expect(be64(foot, 16)).toBe(512n);
    const now = Math.floor(Date.now() / 1000) - 946684800;
    expect(Math.abs(be32(foot, 24) - now)).toBeLessThan(120);
    expect(foot.subarray(28, 32).toString('latin1')).toBe('vhdc');
    expect(foot.subarray(36, 40).toString('latin1')).toBe('Wi2k');
    expect(be64(foot, 40)).toBe(BigInt(SIZE));
    expect(be64(foot, 48)).toBe(BigInt(SIZE));
    expect(be32(foot, 60)).toBe(4); // differencing
    expect(be32(foot, 64)).toBe(specChecksum(foot, 64));
    expect(foot[84]).toBe(0);
    expect(foot.subarray(85).every((x) => x === 0)).toBe(true);
    expect(f.subarray(0, 512).equals(foot)).toBe(true); // the copy at offset 0
    const h = f.subarray(512, 1536);
    expect(h.subarray(0, 8).toString('latin1')).toBe('cxsparse');
    expect(be64(h, 8)).toBe(0xffffffffffffffffn);
    const tableOffset = Number(be64(h, 16));
    expect(be32(h, 24)).toBe(0x00010000);
    const entries = be32(h, 28);
    const bs = be32(h, 32);
    expect(bs).toBe(2 * MiB);
    expect(entries).toBe(SIZE / bs);
    expect(be32(h, 36)).toBe(specChecksum(h, 36));
    const baseFooter = baseFile.subarray(baseFile.length - 512);
    expect(hex(h.subarray(40, 56))).toBe(hex(baseFooter.subarray(68, 84)));
    const baseMtime = Math.floor((await stat(base.file)).mtimeMs / 1000) - 946684800;
    expect(be32(h, 56)).toBe(baseMtime);
    const nameEnd = h.indexOf(Buffer.from([0, 0]), 64);
    expect(Buffer.from(h.subarray(64, 64 + 2 * 'base1.vhd'.length)).swap16().toString('utf16le')).toBe('base1.vhd');
    expect(nameEnd).toBeGreaterThanOrEqual(64 + 2 * 'base1.vhd'.length);
    const locs = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => h.subarray(576 + 24 * i, 600 + 24 * i));
    const decoded = new Map<string, string>();
    for (const l of locs) {
      const code = l.subarray(0, 4).toString('latin1');
      if (be32(l, 0) === 0) {
        expect(l.every((x) => x === 0)).toBe(true);
        continue;
      }
      const space = be32(l, 4);
      const len = be32(l, 8);
      const off = Number(be64(l, 16));
      expect(space).toBe(Math.ceil(len / 512)); // data space in sectors
      expect(off % 512).toBe(0);
      decoded.set(code, f.subarray(off, off + len).toString('utf16le'));
    }
    expect(decoded.get('W2ru')).toBe('.\\base1.vhd');
    expect(decoded.get('W2ku')).toBe(base.file);
    expect(h.subarray(768).every((x) => x === 0)).toBe(true);
    // BAT and the bitmap of a partly written block: exactly the written sectors.
    const bat = (i: number) => be32(f, tableOffset + 4 * i);
    const bit = (map: Buffer, s: number) => (map[s >> 3]! >> (7 - (s & 7))) & 1;
    expect(bat(2)).toBe(0xffffffff);
    const map0 = f.subarray(bat(0) * 512, bat(0) * 512 + 512);
    const written0 = new Set<number>();
    for (let s = Math.floor(4096 / 512); s < Math.ceil((4096 + 8192) / 512); s++) written0.add(s);
    for (let s = Math.floor((2 * MiB - 700) / 512); s < 4096; s++) written0.add(s);
    for (let s = 0; s < 4096; s++) expect(bit(map0, s)).toBe(written0.has(s) ? 1 : 0);
    const map6 = f.subarray(bat(6) * 512, bat(6) * 512 + 512);
    expect(map6.every((x) => x === 0xff)).toBe(true); // the whole block was written
  });

  it('depth 3 with different block sizes reads the model; reopening finds the chain', async () => {
    const base = await qemuBase('base3.vhd');
    const model = Buffer.from(base.bytes);
    const names = ['c1.vhd', 'c2.vhd', 'c3.vhd'];
    let parent = base.file;
    const blockSizes = [2 * MiB, 512 * 1024, 4 * MiB];
    for (let level = 0; level < 3; level++) {
      const p = path.join(dir, names[level]!);
      const img = await createImage(p, { format: 'vhd-differencing', parent, blockSize: blockSizes[level]! });
      const seed = 100 * (level + 1);
      // Several writes in flight at once, overlapping earlier levels' writes and the base's data.
      await Promise.all([
        both(img, model, level * MiB + 512 * level, patternBytes(5000 + level, seed)),
        both(img, model, 8 * MiB + 1000 * level, patternBytes(3000, seed + 1)),
        both(img, model, 20 * MiB + level * 1536 * 1024, patternBytes(700 * 1024, seed + 2)),
      ]);
      await both(img, model, 16 * MiB, new Uint8Array(4096 * (level + 1)));
      expect((await readAll(img)).equals(model)).toBe(true);
      await img.close();
      parent = p;
    }
    const top = await openImage(path.join(dir, 'c3.vhd'));
    try {
      expect(top.parent?.parent?.parent?.path).toBe(base.file);
      expect(top.parent?.parent?.parent?.format).toBe('vhd-dynamic');
      expect((await readAll(top, 1234567)).equals(model)).toBe(true);
    } finally {
      await top.close();
    }
    // The base was never written: qemu still reads what it wrote.
    await tool('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', base.file, base.file + '.after']);
    expect((await readFile(base.file + '.after')).equals(base.bytes)).toBe(true);
  });

  it('concurrent writes to sectors of one block all keep their bitmap bits', async () => {
    const base = await qemuBase('conc-base.vhd');
    const model = Buffer.from(base.bytes);
    const childPath = path.join(dir, 'conc-child.vhd');
    const child = await createImage(childPath, { format: 'vhd-differencing', parent: base.file });
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      // Blocks 0-2, disjoint runs of 1-3 sectors; many land in the same block at once.
      const off = 2 * MiB * (i % 3) + Math.floor(i / 3) * 8 * 512;
      jobs.push(both(child, model, off, patternBytes(512 * (1 + (i % 3)), i + 1)));
    }
    await Promise.all(jobs);
    await child.close();
    const again = await openImage(childPath);
    expect((await readAll(again)).equals(model)).toBe(true);
    await again.close();
  });

  it('a child of a qemu fixed disk, reopened writable and written again', async () => {
    const base = path.join(dir, 'fixed-base.vhd');
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', base, String(6 * MiB)]);
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0xc4 1M 2M', base]);
    const model = Buffer.alloc(6 * MiB);
    model.fill(0xc4, MiB, 3 * MiB);
    const childPath = path.join(dir, 'fixed-child.vhd');
    const child = await createImage(childPath, { format: 'vhd-differencing', parent: base });
    await both(child, model, 2 * MiB - 300, patternBytes(600, 41));
    await child.close();
    const w = await openImage(childPath, { writable: true });
    expect(w.format).toBe('vhd-differencing');
    await both(w, model, 2 * MiB + 100, patternBytes(5000, 42)); // into the block allocated before
    await both(w, model, 5 * MiB, patternBytes(512, 43)); // a new block
    await w.close();
    const r = await openImage(childPath);
    expect(r.parent?.format).toBe('vhd-fixed');
    expect((await readAll(r)).equals(model)).toBe(true);
    await r.close();
  });

  it('finds a parent by the relative locator after a move, by the absolute one (allowed by parentDirs) when only the child moves', async () => {
    const base = await qemuBase('mv-base.vhd');
    const childPath = path.join(dir, 'mv-child.vhd');
    const child = await createImage(childPath, { format: 'vhd-differencing', parent: base.file });
    await child.write(0n, new Uint8Array(512).fill(7));
    await child.close();
    const moved = path.join(dir, 'moved');
    await mkdir(moved);
    // Child alone elsewhere: relative fails; the absolute locator leads out of its directory, followed only when allowed.
    await rename(childPath, path.join(moved, 'mv-child.vhd'));
    await expect(openImage(path.join(moved, 'mv-child.vhd'))).rejects.toMatchObject({ code: 'VHD_PARENT_NOT_ALLOWED' });
    let img = await openImage(path.join(moved, 'mv-child.vhd'), { parentDirs: [dir] });
    expect(img.parent?.path).toBe(base.file);
    await img.close();
    // Both moved together: the absolute path is stale, relative works.
    await rename(base.file, path.join(moved, 'mv-base.vhd'));
    img = await openImage(path.join(moved, 'mv-child.vhd'));
    expect(img.parent?.path).toBe(path.join(moved, 'mv-base.vhd'));
    const b = new Uint8Array(1024);
    await img.read(0n, b);
    expect(b.subarray(0, 512).every((x) => x === 7)).toBe(true);
    expect(b.subarray(512).every((x) => x === 0xa1)).toBe(true);
    await img.close();
  });

  it('missing, mismatched and looping parents are typed errors', async () => {
    const sub = path.join(dir, 'errs');
    await mkdir(sub);
    const p = path.join(sub, 'p.vhd');
    const pImg = await createImage(p, { format: 'vhd-dynamic', virtualSize: 4n * BigInt(MiB) });
    const pUuid = pImg.uuid!;
    await pImg.close();
    const c = path.join(sub, 'c.vhd');
    await (await createImage(c, { format: 'vhd-differencing', parent: p })).close();

    // Mismatch: another disk under the parent's name.
    await rename(p, p + '.orig');
    await (await createImage(p, { format: 'vhd-dynamic', virtualSize: 4n * BigInt(MiB) })).close();
    await expect(openImage(c)).rejects.toMatchObject({ code: 'VHD_PARENT_MISMATCH' });
    // Missing.
    await rename(p, p + '.other');
    await expect(openImage(c)).rejects.toMatchObject({ code: 'VHD_PARENT_MISSING' });
    // Loop: the parent's name now holds a child of c carrying the parent's UUID.
    const loop = path.join(sub, 'loop.vhd');
    await rename(p + '.orig', p);
    await (await createImage(loop, { format: 'vhd-differencing', parent: c, uuid: pUuid })).close();
    await rename(loop, p);
    await expect(openImage(c)).rejects.toMatchObject({ code: 'VHD_PARENT_LOOP' });
  });
});
