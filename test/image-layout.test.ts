/**
 * The layout tables against qemu's writer: qemu-made footers and headers
 * decode, re-encode byte-identical, and our CHS algorithm agrees with the
 * geometry qemu picks (its calculate_geometry follows the same appendix).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  chsGeometry,
  dateFromVhdTimestamp,
  encodeDynamicHeader,
  encodeVhdFooter,
  readDynamicHeader,
  readVhdFooter,
  vhdChecksum,
} from '../src/image/index.js';
import { tempDir, tool } from './image-helpers.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir, cleanup } = await tempDir()));
afterAll(async () => cleanup());

describe('footer and dynamic header tables vs qemu-img create', () => {
  it('decode every field of a qemu dynamic disk and re-encode byte for byte', async () => {
    const file = path.join(dir, 'd.vhd');
    const before = Date.now();
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', file, '100M']);
    const b = await readFile(file);
    const end = b.subarray(b.length - 512);
    const f = readVhdFooter(end);
    expect(f.cookie).toBe('conectix');
    expect(f.features).toBe(2);
    expect(f.formatVersion).toBe(0x00010000);
    expect(f.dataOffset).toBe(512n);
    expect(Math.abs(dateFromVhdTimestamp(f.timestamp).getTime() - before)).toBeLessThan(120_000);
    expect(f.creatorApplication).toBe('qem2'); // qemu marks force_size images so
    expect(f.creatorHostOs).toBe('Wi2k');
    expect(f.currentSize).toBe(100n * 1024n * 1024n);
    expect(f.originalSize).toBe(f.currentSize);
    expect(f.diskType).toBe(3);
    expect(f.checksum).toBe(vhdChecksum(end, 64));
    expect(Buffer.from(encodeVhdFooter(f)).equals(end)).toBe(true);
    expect(Buffer.from(b.subarray(0, 512)).equals(end)).toBe(true);
    const h = readDynamicHeader(b.subarray(512, 1536));
    expect(h.cookie).toBe('cxsparse');
    expect(h.dataOffset).toBe(0xffffffffffffffffn);
    expect(h.tableOffset).toBe(1536n);
    expect(h.headerVersion).toBe(0x00010000);
    expect(h.blockSize).toBe(2 * 1024 * 1024);
    expect(h.maxTableEntries).toBe(50);
    expect(h.parentLocators).toHaveLength(8);
    expect(Buffer.from(encodeDynamicHeader(h)).equals(b.subarray(512, 1536))).toBe(true);
  });

  it('fixed disk footer: data offset all ones, round trip', async () => {
    const file = path.join(dir, 'f.vhd');
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', file, '3M']);
    const b = await readFile(file);
    const end = b.subarray(b.length - 512);
    const f = readVhdFooter(end);
    expect(f.dataOffset).toBe(0xffffffffffffffffn);
    expect(f.diskType).toBe(2);
    expect(f.creatorApplication).toBe('qemu');
    expect(BigInt(b.length - 512)).toBe(f.currentSize);
    expect(Buffer.from(encodeVhdFooter(f)).equals(end)).toBe(true);
  });
});

describe('CHS geometry (spec appendix) agrees with qemu', () => {
  // Sizes across the algorithm's branches: 17, 31, 63 and 255 sectors per track, and the cap.
  const sizes = ['1M', '7M', '33M', '100M', '500M', '1000M', '2G', '8G', '31G', '60G', '127G', '200G', '1T'];
  it.each(sizes)('%s', async (size) => {
    const file = path.join(dir, `chs-${size}.vhd`);
    await tool('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', file, size]);
    const b = await readFile(file);
    const f = readVhdFooter(b.subarray(0, 512));
    const qemuGeometry = { cylinders: f.cylinders, heads: f.heads, sectorsPerTrack: f.sectorsPerTrack };
    // qemu rounds the size up to a whole geometry; the spec algorithm on that size must give the same geometry.
    const product = BigInt(f.cylinders * f.heads * f.sectorsPerTrack) * 512n;
    if (f.cylinders === 65535 && f.heads === 16 && f.sectorsPerTrack === 255) {
      expect(chsGeometry(f.currentSize)).toEqual(qemuGeometry); // past the cap: maximum geometry
    } else {
      expect(f.currentSize).toBe(product);
      expect(chsGeometry(product)).toEqual(qemuGeometry);
    }
  });
});
