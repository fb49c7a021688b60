/** What every image shares: argument and state checks around the format's positional I/O. */
import type { FileHandle } from 'node:fs/promises';
import type { ChsGeometry } from './chs-geometry.js';
import { directWriteAligned, openDirectWriter } from './direct-writes.js';
import { extentsFromRanges } from './extent-merge.js';
import { ImageError } from './errors.js';
import { writeAt } from './file-io.js';
import type { DynamicHeader } from './vhd-dynamic-header.js';
import type { VhdFooter } from './vhd-footer.js';
import type { DiskImage, Extent, ImageFormat, WritableImage } from './types.js';
import { startWriteback } from './native-io.js';
import type { FileReadPlan, FileWritePlan, FileWriteReport, ReadPiece } from './planned-io.js';

/** Disk offsets are carried as plain numbers inside the layer; 2^53 bytes is far past any VHD. */
const MAX_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

export interface ImageDescription {
  readonly format: ImageFormat;
  readonly path: string;
  readonly virtualSize: bigint;
  readonly writable: boolean;
  readonly warnings?: readonly string[];
  readonly uuid?: string;
  readonly geometry?: ChsGeometry;
  readonly blockSize?: number;
  readonly footer?: VhdFooter;
  readonly dynamicHeader?: DynamicHeader;
  readonly parent?: DiskImage;
}

export abstract class ImageBase implements WritableImage {
  readonly format: ImageFormat;
  readonly path: string;
  readonly virtualSize: bigint;
  readonly writable: boolean;
  readonly warnings: readonly string[];
  readonly uuid?: string;
  readonly geometry?: ChsGeometry;
  readonly blockSize?: number;
  readonly footer?: VhdFooter;
  readonly dynamicHeader?: DynamicHeader;
  readonly parent?: DiskImage;
  protected readonly size: number;
  private closed = false;
  /** O_DIRECT handle for whole-page data writes, once asked for; not used again after an EINVAL. */
  private direct: FileHandle | null = null;
  private directRefused = false;

  protected constructor(protected readonly fh: FileHandle, d: ImageDescription) {
    this.format = d.format;
    this.path = d.path;
    this.virtualSize = d.virtualSize;
    this.size = Number(d.virtualSize);
    this.writable = d.writable;
    this.warnings = Object.freeze([...(d.warnings ?? [])]);
    if (d.uuid !== undefined) this.uuid = d.uuid;
    if (d.geometry !== undefined) this.geometry = d.geometry;
    if (d.blockSize !== undefined) this.blockSize = d.blockSize;
    if (d.footer !== undefined) this.footer = d.footer;
    if (d.dynamicHeader !== undefined) this.dynamicHeader = d.dynamicHeader;
    if (d.parent !== undefined) this.parent = d.parent;
  }

  /** Read [pos, pos + into.length) of the virtual disk, already range-checked. */
  protected abstract readRange(pos: number, into: Uint8Array): Promise<void>;
  /** Write at `pos`, already range-checked and writable. */
  protected abstract writeRange(pos: number, data: Uint8Array): Promise<void>;
  /** Make [pos, pos + len) read as zeros. */
  protected abstract discardRange(pos: number, len: number): Promise<void>;
  /** Sorted disjoint allocated ranges meeting [from, to), as a flat [start, end, ...] list (used by child disks too). */
  abstract allocatedRanges(from: number, to: number): Promise<number[]>;
  /** Release format-specific resources (parents). */
  protected async closeExtra(): Promise<void> {}

  async *extents(range?: { offset: bigint; length: bigint }): AsyncIterable<Extent> {
    this.checkOpen();
    const from = range ? this.checkRange(range.offset, range.length) : 0;
    const to = range ? from + Number(range.length) : this.size;
    yield* extentsFromRanges(await this.allocatedRanges(from, to), from, to);
  }

  async read(offset: bigint, into: Uint8Array): Promise<void> {
    this.checkOpen();
    const pos = this.checkRange(offset, BigInt(into.length));
    if (into.length === 0) return;
    await this.readRange(pos, into);
  }

  async write(offset: bigint, data: Uint8Array): Promise<void> {
    const pos = this.checkWriteRange(offset, BigInt(data.length));
    if (data.length === 0) return;
    await this.writeRange(pos, data);
  }

  async discard(offset: bigint, length: bigint): Promise<void> {
    const pos = this.checkWriteRange(offset, length);
    if (length === 0n) return;
    await this.discardRange(pos, Number(length));
  }

  async reserve(offset: bigint, length: bigint): Promise<void> {
    const pos = this.checkWriteRange(offset, length);
    if (length === 0n) return;
    await this.reserveRange(pos, Number(length));
  }

  /** The checks every change to the file starts with: open, writable, range inside the disk; its file position. */
  private checkWriteRange(offset: bigint, length: bigint): number {
    this.checkOpen();
    this.checkWritable();
    return this.checkRange(offset, length);
  }

  /** reserve() for an in-range, non-empty range; formats whose writes allocate as they go leave it alone. */
  protected async reserveRange(_pos: number, _len: number): Promise<void> {}

  /** Last work on the file before the closing flush (close() calls it on writable images). */
  protected async finishWrites(): Promise<void> {}

  fileSpan(offset: bigint, length: number): number | null {
    if (this.closed || length <= 0 || offset < 0n || offset + BigInt(length) > this.virtualSize) return null;
    return this.spanInFile(Number(offset), length);
  }

  /** fileSpan for an in-range, non-empty request. */
  protected abstract spanInFile(pos: number, length: number): number | null;

  readPlan(offset: bigint, length: number): FileReadPlan | null {
    if (this.closed || length <= 0 || offset < 0n || offset + BigInt(length) > this.virtualSize) return null;
    const pieces = this.readPieces(Number(offset), length);
    return pieces === null ? null : { fd: this.fh.fd, pieces, shortReads: this.format === 'raw' ? 'zeros' : 'error', path: this.path };
  }

  /** Where an in-range, non-empty read lies in the file, piece by piece (position -1: zeros); null when not all of it is in this file. */
  protected readPieces(pos: number, length: number): ReadPiece[] | null {
    const at = this.spanInFile(pos, length);
    return at === null ? null : [{ position: at, length }];
  }

  writePlan(offset: bigint, length: number): FileWritePlan | null {
    if (this.closed || !this.writable || length <= 0 || offset < 0n || offset + BigInt(length) > this.virtualSize) return null;
    const plan = this.planWrite(Number(offset), length);
    if (plan === null) return null;
    return { ...plan, fd: this.fh.fd, directFd: this.directWritesOn ? this.direct!.fd : -1 };
  }

  /** Where an in-range, non-empty write may go from another thread, or null when it must go through write() (the default). */
  protected planWrite(_pos: number, _length: number): Pick<FileWritePlan, 'position' | 'skipZeroChunks'> | null {
    return null;
  }

  wrotePlanned(report: FileWriteReport): void {
    if (report.directRefused) this.directRefused = true;
    this.notePlannedWrites(report.chunkRuns);
  }

  /** What a format keeps track of after a planned write (a fresh file's written chunks). */
  protected notePlannedWrites(_chunkRuns: readonly number[]): void {}

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.writable) await this.fh.datasync();
  }

  async useDirectWrites(): Promise<boolean> {
    this.checkOpen();
    if (!this.writable || !this.directWritesSupported()) return false;
    this.direct ??= await openDirectWriter(this.path);
    return this.direct !== null;
  }

  /** Whether this format may send data writes past the page cache (see writeData). */
  protected directWritesSupported(): boolean {
    return false;
  }

  /** True once useDirectWrites() succeeded and the kernel has not refused a direct write. */
  protected get directWritesOn(): boolean {
    return this.direct !== null && !this.directRefused;
  }

  /**
   * Write disk data at file offset `pos`: whole aligned pages straight to the device when direct writes
   * are on (direct-writes.ts says why whole pages make mixing with buffered metadata writes safe), else buffered.
   */
  protected async writeData(data: Uint8Array, pos: number): Promise<void> {
    if (this.directWritesOn && directWriteAligned(data, pos)) {
      try {
        return await writeAt(this.direct!, data, pos);
      } catch (e) {
        // The device wants a larger alignment than we checked: buffered from now on (the handle stays open
        // until close, as other writes may be using it).
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        this.directRefused = true;
      }
    }
    return writeAt(this.fh, data, pos);
  }

  startWriteback(): void {
    if (!this.closed && this.writable) startWriteback(this.fh.fd);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.writable) {
        await this.finishWrites();
        await this.flush();
      }
    } finally {
      this.closed = true;
      try {
        await this.direct?.close();
      } finally {
        this.direct = null;
        await this.fh.close();
        await this.closeExtra();
      }
    }
  }

  protected checkOpen(): void {
    if (this.closed) throw new ImageError('IMAGE_CLOSED', `${this.path}: image is closed`);
  }

  private checkWritable(): void {
    if (!this.writable) throw new ImageError('IMAGE_READ_ONLY', `${this.path}: image is open read-only`);
  }

  private checkRange(offset: bigint, length: bigint): number {
    if (typeof offset !== 'bigint' || typeof length !== 'bigint') {
      throw new ImageError('IMAGE_BAD_ARGUMENT', `${this.path}: offsets and lengths are bigint`);
    }
    if (offset < 0n || length < 0n || offset + length > this.virtualSize || offset > MAX_OFFSET) {
      throw new ImageError('IMAGE_OUT_OF_RANGE', `${this.path}: range ${String(offset)}+${String(length)} is outside the ${this.virtualSize}-byte disk`);
    }
    return Number(offset);
  }
}
