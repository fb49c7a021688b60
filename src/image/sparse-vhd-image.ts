/**
 * Dynamic and differencing VHDs (spec "Dynamic Hard Disk Image"): a BAT of
 * block sector offsets, each block a sector bitmap padded to whole sectors
 * followed by block-size bytes of data. Reads go straight to the file with no
 * lock; allocations take their space one at a time (they move the end footer)
 * and dynamic blocks are filled side by side; differencing allocations and
 * bitmap updates are serialized.
 */
import type { FileHandle } from 'node:fs/promises';
import { ImageBase, type ImageDescription } from './image-base.js';
import { readExactly, writeAt, writeVectorAt } from './file-io.js';
import { isAllZero, zeroPieces } from './zero-detect.js';
import { KeyedLock } from './keyed-lock.js';
import { ImageError } from './errors.js';
import { BAT_UNALLOCATED } from './vhd-dynamic-header.js';
import { bitmapRun, bitmapSetRange, bitmapTest } from './sector-bitmap.js';
import { pushRange, unionRanges } from './extent-merge.js';
import type { DiskImage } from './types.js';
import type { ReadPiece } from './planned-io.js';

const ALLOCATION = -1;
const BITMAP_CACHE_ENTRIES = 1024;
const PAGE = 4096;

/** The first sector offset at or after `from` whose block data (after a `bitmapSize` bitmap) starts on a page. */
function alignBlockData(from: number, bitmapSize: number): number {
  const dataStart = Math.ceil((from + bitmapSize) / PAGE) * PAGE;
  return dataStart - bitmapSize;
}

export interface SparseLayout {
  /** In-memory BAT, one entry per block of the virtual disk (sector offsets, BAT_UNALLOCATED for none). */
  readonly bat: Uint32Array;
  readonly batOffset: number;
  readonly blockSize: number;
  readonly bitmapSize: number;
  /** Where the next block goes: just past the last block or the metadata. */
  readonly nextFree: number;
  /** The encoded footer, written at the end and (unchanged) at offset 0. */
  readonly footerBytes: Uint8Array;
  /** Write the footer at `nextFree` before the first change (the end footer was damaged). */
  readonly repairEndFooter: boolean;
  /** Current file length. */
  readonly fileSize: number;
}

/** Reads of a parent disk, which may be shorter than the child. */
interface ParentSource {
  readonly image: DiskImage & { allocatedRanges(from: number, to: number): Promise<number[]> };
}

export class SparseVhdImage extends ImageBase {
  private readonly bat: Uint32Array;
  private readonly batOffset: number;
  private readonly bs: number;
  private readonly bitmapSize: number;
  private readonly footerBytes: Uint8Array;
  private nextFree: number;
  private fileEnd: number;
  private repairEndFooter: boolean;
  private readonly differencing: boolean;
  private readonly parentSource: ParentSource | null;
  private readonly locks = new KeyedLock();
  /** Dynamic blocks whose space is taken and whose data and BAT entry are being written (allocateWith). */
  private readonly filling = new Map<number, Promise<void>>();
  private readonly bitmaps = new Map<number, Uint8Array>();
  /** Bumped after every bitmap write: a bitmap loaded across one is used once, never cached. */
  private bitmapEpoch = 0;

  constructor(fh: FileHandle, d: ImageDescription, layout: SparseLayout, parent: ParentSource | null) {
    super(fh, d);
    this.bat = layout.bat;
    this.batOffset = layout.batOffset;
    this.bs = layout.blockSize;
    this.bitmapSize = layout.bitmapSize;
    this.footerBytes = layout.footerBytes;
    this.nextFree = layout.nextFree;
    this.fileEnd = layout.fileSize;
    this.repairEndFooter = layout.repairEndFooter;
    this.differencing = d.format === 'vhd-differencing';
    this.parentSource = parent;
  }

  // ---- reading ----

  protected async readRange(pos: number, into: Uint8Array): Promise<void> {
    const jobs: Promise<void>[] = [];
    const end = pos + into.length;
    for (let p = pos; p < end; ) {
      const blk = Math.floor(p / this.bs);
      const n = Math.min((blk + 1) * this.bs, end) - p;
      jobs.push(this.readInBlock(blk, p - blk * this.bs, into.subarray(p - pos, p - pos + n)));
      p += n;
    }
    await Promise.all(jobs);
  }

  /**
   * Dynamic disks: a whole page inside a block's data holds no bitmap, BAT or footer bytes, so it may go direct
   * (allocate() places new blocks so that all their data pages are whole). Differencing: bitmaps change with data.
   */
  protected override directWritesSupported(): boolean {
    return !this.differencing;
  }

  /** Within one allocated block of a dynamic disk (its data is authoritative, see readInBlock); differencing: never. */
  protected spanInFile(pos: number, length: number): number | null {
    if (this.differencing) return null;
    const blk = Math.floor(pos / this.bs);
    const within = pos - blk * this.bs;
    const entry = this.bat[blk];
    if (within + length > this.bs || entry === undefined || entry === BAT_UNALLOCATED) return null;
    // The BAT entry is set only after the block's bitmap and data are written (allocate()).
    return entry * 512 + this.bitmapSize + within;
  }

  /** Dynamic disks: block by block, an allocated block's data from the file and an unallocated one as zeros (readInBlock). */
  protected override readPieces(pos: number, length: number): ReadPiece[] | null {
    if (this.differencing) return null;
    const pieces: ReadPiece[] = [];
    const end = pos + length;
    for (let p = pos; p < end; ) {
      const blk = Math.floor(p / this.bs);
      const n = Math.min((blk + 1) * this.bs, end) - p;
      const entry = this.bat[blk];
      if (entry === undefined) return null;
      pieces.push({ position: entry === BAT_UNALLOCATED ? -1 : entry * 512 + this.bitmapSize + (p - blk * this.bs), length: n });
      p += n;
    }
    return pieces;
  }

  private async readInBlock(blk: number, within: number, out: Uint8Array): Promise<void> {
    const entry = this.bat[blk]!;
    if (entry === BAT_UNALLOCATED) return this.readParent(blk * this.bs + within, out);
    const data = entry * 512 + this.bitmapSize;
    if (!this.differencing) {
      // Dynamic disks: data of an allocated block is authoritative (zeroed at allocation), as qemu reads it.
      return readExactly(this.fh, out, data + within, `${this.path}: block ${blk}`);
    }
    const map = await this.bitmap(blk);
    const first = Math.floor(within / 512);
    const last = Math.floor((within + out.length - 1) / 512) + 1;
    const jobs: Promise<void>[] = [];
    for (let s = first; s < last; ) {
      const run = bitmapRun(map, s, last);
      const a = Math.max(s * 512, within);
      const b = Math.min((s + run) * 512, within + out.length);
      const piece = out.subarray(a - within, b - within);
      jobs.push(bitmapTest(map, s) ? readExactly(this.fh, piece, data + a, `${this.path}: block ${blk}`) : this.readParent(blk * this.bs + a, piece));
      s += run;
    }
    await Promise.all(jobs);
  }

  private async readParent(pos: number, out: Uint8Array): Promise<void> {
    const parent = this.parentSource?.image;
    if (!parent) {
      out.fill(0);
      return;
    }
    const psize = Number(parent.virtualSize);
    const n = Math.max(0, Math.min(out.length, psize - pos));
    if (n > 0) await parent.read(BigInt(pos), out.subarray(0, n));
    if (n < out.length) out.fill(0, n);
  }

  private async bitmap(blk: number): Promise<Uint8Array> {
    const cached = this.bitmaps.get(blk);
    if (cached) return cached;
    const epoch = this.bitmapEpoch;
    const map = new Uint8Array(this.bitmapSize);
    await readExactly(this.fh, map, this.bat[blk]! * 512, `${this.path}: sector bitmap of block ${blk}`);
    const again = this.bitmaps.get(blk);
    if (again) return again;
    if (epoch === this.bitmapEpoch) this.cacheBitmap(blk, map);
    return map;
  }

  private cacheBitmap(blk: number, map: Uint8Array): void {
    if (!this.bitmaps.has(blk) && this.bitmaps.size >= BITMAP_CACHE_ENTRIES) {
      const oldest = this.bitmaps.keys().next().value as number;
      this.bitmaps.delete(oldest);
    }
    this.bitmaps.set(blk, map);
  }

  async allocatedRanges(from: number, to: number): Promise<number[]> {
    const own: number[] = [];
    const bat = this.bat;
    const bs = this.bs;
    const last = Math.min(bat.length, Math.ceil(to / bs));
    for (let i = Math.floor(from / bs); i < last; i++) {
      if (bat[i] !== BAT_UNALLOCATED) pushRange(own, i * bs, Math.min((i + 1) * bs, this.size));
    }
    const parent = this.parentSource?.image;
    if (!parent) return own;
    const pto = Math.min(to, Number(parent.virtualSize));
    if (pto <= from) return own;
    return unionRanges(own, await parent.allocatedRanges(from, pto));
  }

  // ---- this link alone (chain tools: delta encryption, verify, merge) ----

  /** The file sector where block `blk` of this link starts (its bitmap), or null when this link does not hold it. */
  ownBlockSector(blk: number): number | null {
    const e = this.bat[blk];
    return e === undefined || e === BAT_UNALLOCATED ? null : e;
  }

  /** Number of BAT entries (blocks of the virtual disk). */
  get blockCount(): number {
    return this.bat.length;
  }

  /** Bytes of each block's sector bitmap. */
  get sectorBitmapBytes(): number {
    return this.bitmapSize;
  }

  /** A copy of block `blk`'s sector bitmap in this link's file, or null when this link does not hold the block. */
  async ownBitmap(blk: number): Promise<Uint8Array | null> {
    if (this.ownBlockSector(blk) === null) return null;
    return Uint8Array.from(await this.bitmap(blk));
  }

  /** This link's own data of block `blk` (whatever its bitmap says), from `within`; the block must be held here. */
  async readOwnData(blk: number, within: number, into: Uint8Array): Promise<void> {
    const s = this.ownBlockSector(blk);
    if (s === null || within < 0 || within + into.length > this.bs) throw new ImageError('IMAGE_OUT_OF_RANGE', `${this.path}: block ${blk} is not held by this file`);
    await readExactly(this.fh, into, s * 512 + this.bitmapSize + within, `${this.path}: block ${blk}`);
  }

  // ---- writing ----

  protected async writeRange(pos: number, data: Uint8Array): Promise<void> {
    if (this.differencing && (pos % 512 !== 0 || data.length % 512 !== 0)) {
      // Bitmaps track whole sectors: widen to sectors, taking the edges from the merged view.
      const a = Math.floor(pos / 512) * 512;
      const b = Math.ceil((pos + data.length) / 512) * 512;
      const buf = new Uint8Array(b - a);
      await this.readRange(a, buf.subarray(0, 512));
      if (b - a > 512) await this.readRange(b - 512, buf.subarray(b - a - 512));
      buf.set(data, pos - a);
      pos = a;
      data = buf;
    }
    const jobs: Promise<void>[] = [];
    const end = pos + data.length;
    for (let p = pos; p < end; ) {
      const blk = Math.floor(p / this.bs);
      const n = Math.min((blk + 1) * this.bs, end) - p;
      jobs.push(this.writeInBlock(blk, p - blk * this.bs, data.subarray(p - pos, p - pos + n)));
      p += n;
    }
    await Promise.all(jobs);
  }

  private async writeInBlock(blk: number, within: number, data: Uint8Array): Promise<void> {
    if (this.bat[blk] === BAT_UNALLOCATED) {
      // A dynamic block never written reads as zeros already.
      if (!this.differencing && isAllZero(data)) return;
      if (await this.allocateWith(blk, within, data)) return;
    }
    const dataPos = this.bat[blk]! * 512 + this.bitmapSize + within;
    await this.writeData(data, dataPos);
    if (this.differencing) {
      // Data first, then the bits: a reader never sees a set bit over stale data.
      await this.locks.run(blk, async () => {
        // Under the block lock the disk copy is current: start from it (or the cache) and write it back.
        const map = Uint8Array.from(await this.bitmap(blk));
        if (bitmapSetRange(map, within / 512, (within + data.length) / 512)) {
          await writeAt(this.fh, map, this.bat[blk]! * 512);
          this.bitmapEpoch++;
          this.cacheBitmap(blk, map);
        }
      });
    }
  }

  /**
   * Allocate block `blk` holding `data` at `within`, unless another write did first (then false: the caller writes
   * into the block). A dynamic block's space is taken under the allocation lock and filled outside it, so blocks
   * are filled side by side (their data writes are most of the time); a write into a block still being filled
   * waits for it. A differencing block is allocated whole under the lock (its bitmap starts from this write).
   */
  private async allocateWith(blk: number, within: number, data: Uint8Array): Promise<boolean> {
    if (this.differencing) {
      return this.locks.run(ALLOCATION, async () => {
        if (this.bat[blk] !== BAT_UNALLOCATED) return false;
        const space = await this.takeSpace();
        await this.fillBlock(blk, space, within, data);
        return true;
      });
    }
    for (let pending = this.filling.get(blk); pending !== undefined; pending = this.filling.get(blk)) await pending.catch(() => undefined);
    if (this.bat[blk] !== BAT_UNALLOCATED) return false;
    const fill = this.locks.run(ALLOCATION, () => this.takeSpace()).then((space) => this.fillBlock(blk, space, within, data));
    this.filling.set(blk, fill);
    try {
      await fill;
    } finally {
      this.filling.delete(blk);
    }
    return true;
  }

  /**
   * The space of a new block (under the allocation lock): the footer goes to the new end first, so the file ends in
   * a valid footer whatever happens to the block after (spec "Block Allocation Table and Data Blocks"). Returns its
   * first byte and the file's end before it (bytes below that are not a hole: fillBlock zeros them).
   */
  private async takeSpace(): Promise<{ readonly start: number; readonly endBefore: number }> {
    // With direct writes, block data starts on a page (a bitmap sector before it, the gap unused), so whole
    // pages of data can go past the page cache; the spec lets a block sit at any sector.
    const start = this.directWritesOn ? alignBlockData(this.nextFree, this.bitmapSize) : this.nextFree;
    const end = start + this.bitmapSize + this.bs;
    if (start / 512 >= BAT_UNALLOCATED) {
      throw new ImageError('VHD_UNSUPPORTED_SIZE', `${this.path}: file would grow past the 2 TiB a 32-bit BAT sector offset can address`);
    }
    await writeAt(this.fh, this.footerBytes, end);
    const endBefore = this.fileEnd;
    this.fileEnd = Math.max(this.fileEnd, end + this.footerBytes.length);
    this.nextFree = end;
    this.repairEndFooter = false;
    return { start, endBefore };
  }

  /**
   * Write block `blk`'s bitmap and `data` into its space (over the old footer, or into the hole past it), then its
   * BAT entry: after a crash at any step the BAT never points at unwritten data. A block whose fill fails leaves its
   * space unused (the spec allows it).
   */
  private async fillBlock(blk: number, space: { readonly start: number; readonly endBefore: number }, within: number, data: Uint8Array): Promise<void> {
    const { start, endBefore } = space;
    const map = new Uint8Array(this.bitmapSize);
    if (this.differencing) bitmapSetRange(map, within / 512, (within + data.length) / 512);
    else map.fill(0xff); // every sector of a dynamic block is present (its data area reads zeros), as qemu writes it
    // Data-area bytes at or past the old end of file are a hole already (the footer write extended the
    // file): zeros need writing only below it, e.g. over the old footer or space leaked by a discard.
    const dataStart = start + this.bitmapSize;
    const zerosUpTo = (limit: number) => Math.max(0, Math.min(limit, endBefore - dataStart));
    const head = zerosUpTo(within);
    const tailFrom = within + data.length;
    const tail = Math.max(0, zerosUpTo(this.bs) - tailFrom);
    await writeVectorAt(this.fh, [map, ...zeroPieces(head)], start);
    await this.writeData(data, dataStart + within);
    if (tail > 0) await writeVectorAt(this.fh, zeroPieces(tail), dataStart + tailFrom);
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, start / 512, false);
    await writeAt(this.fh, entry, this.batOffset + blk * 4);
    this.bat[blk] = start / 512;
    if (this.differencing) this.cacheBitmap(blk, map);
  }

  protected async discardRange(pos: number, len: number): Promise<void> {
    if (this.differencing) {
      // Deallocating would expose the parent: write zeros instead.
      for (let o = 0; o < len; o += this.bs) {
        const n = Math.min(this.bs, len - o);
        const zeros = new Uint8Array(n);
        await this.writeRange(pos + o, zeros);
      }
      return;
    }
    const end = pos + len;
    for (let p = pos; p < end; ) {
      const blk = Math.floor(p / this.bs);
      const bEnd = Math.min((blk + 1) * this.bs, end);
      const whole = p === blk * this.bs && (bEnd === (blk + 1) * this.bs || bEnd === this.size);
      if (this.bat[blk] !== BAT_UNALLOCATED) {
        if (whole) await this.deallocate(blk);
        else await writeVectorAt(this.fh, zeroPieces(bEnd - p), this.bat[blk]! * 512 + this.bitmapSize + (p - blk * this.bs));
      }
      p = bEnd;
    }
  }

  /** Mark a dynamic block unallocated (its space is left unused, as the spec allows). */
  private async deallocate(blk: number): Promise<void> {
    await this.locks.run(ALLOCATION, async () => {
      const entry = new Uint8Array([0xff, 0xff, 0xff, 0xff]);
      await writeAt(this.fh, entry, this.batOffset + blk * 4);
      this.bat[blk] = BAT_UNALLOCATED;
      this.bitmapEpoch++;
      this.bitmaps.delete(blk);
    });
  }

  override async flush(): Promise<void> {
    if (this.repairEndFooter && this.writable) {
      await this.locks.run(ALLOCATION, async () => {
        if (!this.repairEndFooter) return;
        await writeAt(this.fh, this.footerBytes, this.nextFree);
        this.repairEndFooter = false;
      });
    }
    await super.flush();
  }

  protected override async closeExtra(): Promise<void> {
    await this.parentSource?.image.close();
  }
}
