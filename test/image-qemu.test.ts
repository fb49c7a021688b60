/**
 * Interop with qemu 7.2 (the "vpc" driver): images qemu makes read back here
 * byte for byte as `qemu-img convert -O raw` sees them, with the same
 * allocation as `qemu-img map`; images we make open in qemu at the size we
 * asked for and compare identical to their raw source.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chsGeometry, chsSectors, createImage, openImage } from '../src/image/index.js';
import { allocatedOf, patternBytes, qemuDataRanges, readAll, tempDir, tool, toolStatus } from './image-helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

const MiB = 1024 * 1024;
/** A size that is exactly a whole spec CHS geometry (20 MiB rounded down to whole cylinders). */
const CHS_WHOLE = Number(chsSectors(chsGeometry(20n * BigInt(MiB)))) * 512;

// Scattered writes: sector-aligned and not, crossing 2 MiB block boundaries, the last sector.
function writesFor(size: number): Array<[number, number, number]> {
  return [
    [0, 4096, 0x11],
    [5000, 1000, 0x22],
    [2 * MiB - 512, 1024, 0x33],
    [3 * MiB + 12345, 70000, 0x44],
    [7 * MiB, 2 * MiB, 0x55],
    [size - 512, 512, 0x66],
    [Math.floor(size / 2 / 512) * 512 + 7, 300, 0x77],
  ];
}

describe('qemu-made images read like qemu reads them', () => {
  const cases: Array<{ sub: 'fixed' | 'dynamic'; force: boolean; size: number }> = [];
  for (const sub of ['fixed', 'dynamic'] as const)
    for (const force of [false, true])
      for (const size of [CHS_WHOLE, 20 * MiB + 3 * 512, 12 * MiB]) cases.push({ sub, force, size });

  it.each(cases)('$sub force_size=$force size=$size', async ({ sub, force, size }) => {
    const file = path.join(dir, `q-${sub}-${force}-${size}.vhd`);
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${sub}${force ? ',force_size=on' : ''}`, file, String(size)]);
    const args = ['-f', 'vpc'];
    for (const [off, len, pat] of writesFor(size)) args.push('-c', `write -q -P ${pat} ${off} ${len}`);
    // The last-sector write must land inside qemu's view of the size (qemu may round up without force_size).
    await tool('qemu-io', [...args, file]);
    const raw = file + '.raw';
    await tool('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, raw]);
    const want = await readFile(raw);

    const img = await openImage(file);
    try {
      expect(img.format).toBe(sub === 'fixed' ? 'vhd-fixed' : 'vhd-dynamic');
      expect(img.warnings).toEqual([]);
      expect(img.virtualSize).toBe(BigInt(want.length));
      const info = JSON.parse(await tool('qemu-img', ['info', '-f', 'vpc', '--output=json', file])) as { 'virtual-size': number };
      expect(img.virtualSize).toBe(BigInt(info['virtual-size']));
      // Whole-disk reads in 1 MiB requests and odd-sized unaligned requests, both in flight together.
      const got = await readAll(img);
      expect(got.equals(want)).toBe(true);
      const odd = await readAll(img, 3 * MiB + 777);
      expect(odd.equals(want)).toBe(true);

      const ours = await allocatedOf(img);
      const qemu = await qemuDataRanges(file, 'vpc');
      if (sub === 'dynamic') {
        expect(ours).toEqual(qemu);
      } else {
        // Fixed: qemu asks the file system for holes (SEEK_DATA), which Node cannot; we report all allocated.
        for (const [s, e] of qemu) expect(ours.some(([a, b]) => a <= s && e <= b)).toBe(true);
      }
    } finally {
      await img.close();
    }
  });
});

describe('images we write are what qemu expects', () => {
  const cases: Array<{ format: 'vhd-fixed' | 'vhd-dynamic'; size: number; blockSize?: number }> = [
    { format: 'vhd-fixed', size: CHS_WHOLE },
    { format: 'vhd-fixed', size: 20 * MiB + 3 * 512 },
    { format: 'vhd-dynamic', size: CHS_WHOLE },
    { format: 'vhd-dynamic', size: 20 * MiB + 3 * 512 },
    { format: 'vhd-dynamic', size: 9 * MiB, blockSize: 512 * 1024 },
  ];

  it.each(cases)('$format size=$size blockSize=$blockSize', async ({ format, size, blockSize }) => {
    // The raw source is made with plain fs writes: sparse data, some all-zero stretches written explicitly.
    const src = path.join(dir, `src-${format}-${size}-${blockSize}.raw`);
    const srcBytes = Buffer.alloc(size);
    for (const [off, len, seed] of [[0, 70000, 1], [3 * MiB + 5, 4096, 2], [size - 8192, 8192, 3], [6 * MiB, 1536 * 1024, 4]] as const) {
      srcBytes.set(patternBytes(len, seed), off);
    }
    await writeFile(src, srcBytes);

    const file = path.join(dir, `ours-${format}-${size}-${blockSize}.vhd`);
    const img = await createImage(file, { format, virtualSize: BigInt(size), ...(blockSize ? { blockSize } : {}) });
    // Copy in 1 MiB pieces, several writes in flight, the zero pieces included.
    const jobs: Promise<void>[] = [];
    for (let o = 0; o < size; o += MiB) jobs.push(img.write(BigInt(o), srcBytes.subarray(o, Math.min(o + MiB, size))));
    await Promise.all(jobs);
    await img.close();

    const info = JSON.parse(await tool('qemu-img', ['info', '-f', 'vpc', '--output=json', file])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(size);
    const cmp = await toolStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', src, file]);
    expect(cmp.stderr).toBe('');
    expect(cmp.code).toBe(0);
    // qemu 7.2 implements no `check` for vpc (exit 63, "does not support checks"): prove that instead.
    const check = await toolStatus('qemu-img', ['check', '-f', 'vpc', file]);
    expect(check.code).toBe(63);

    if (format === 'vhd-dynamic') {
      // Unwritten zero blocks stay unallocated.
      const map = await qemuDataRanges(file, 'vpc');
      const bs = blockSize ?? 2 * MiB;
      const fileLen = (await stat(file)).size;
      expect(map.reduce((n, [s, e]) => n + e - s, 0)).toBeLessThan(size);
      expect(fileLen).toBeLessThan(size);
      // qemu allocates after our blocks without clobbering them: its writes land, ours survive.
      await tool('qemu-io', ['-f', 'vpc', '-c', `write -q -P 0x5a ${bs * 2} 4096`, '-c', `write -q -P 0x5b ${size - 4096} 4096`, file]);
      srcBytes.fill(0x5a, bs * 2, bs * 2 + 4096);
      srcBytes.fill(0x5b, size - 4096, size);
      const back = await openImage(file);
      try {
        expect(back.warnings).toEqual([]);
        expect((await readAll(back)).equals(srcBytes)).toBe(true);
        expect(await allocatedOf(back)).toEqual(await qemuDataRanges(file, 'vpc'));
      } finally {
        await back.close();
      }
    }
  });

  it('azure: true makes a MiB-aligned fixed VHD qemu reads at that size', async () => {
    const file = path.join(dir, 'azure.vhd');
    const img = await createImage(file, { format: 'vhd-fixed', virtualSize: 5n * BigInt(MiB) + 512n, azure: true });
    expect(img.virtualSize).toBe(6n * BigInt(MiB));
    await img.close();
    const info = JSON.parse(await tool('qemu-img', ['info', '-f', 'vpc', '--output=json', file])) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(6 * MiB);
    expect((await stat(file)).size).toBe(6 * MiB + 512);
  });

  it('writable openImage on a qemu dynamic disk allocates blocks qemu then reads', async () => {
    const file = path.join(dir, 'rw.vhd');
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', file, String(16 * MiB)]);
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0x10 1M 64k', file]);
    const img = await openImage(file, { writable: true });
    const a = patternBytes(3 * MiB, 9);
    await Promise.all([img.write(5n * BigInt(MiB) + 100n, a), img.write(BigInt(MiB) + 4096n, new Uint8Array(512).fill(0x99))]);
    await img.close();
    const raw = file + '.raw';
    await tool('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, raw]);
    const want = Buffer.alloc(16 * MiB);
    want.fill(0x10, MiB, MiB + 65536);
    want.fill(0x99, MiB + 4096, MiB + 4608);
    want.set(a, 5 * MiB + 100);
    expect((await readFile(raw)).equals(want)).toBe(true);
  });
});
