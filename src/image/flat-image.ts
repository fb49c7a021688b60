/**
 * Raw images and fixed VHDs: the virtual disk is the first `virtualSize` bytes
 * of the file (a fixed VHD adds one footer after them, spec "Fixed Hard Disk
 * Image").
 */
import type { FileHandle } from 'node:fs/promises';
import { getSystemErrorName } from 'node:util';
import { ImageBase, type ImageDescription } from './image-base.js';
import { readAt, writeVectorAt } from './file-io.js';
import { isAllZero, zeroPieces } from './zero-detect.js';
import { CHUNK_SIZE, WrittenChunks } from './written-chunks.js';
import { fileSpace } from './native-io.js';

/** fallocate failures that mean the data cannot be written either; any other refusal only loses the speed-up. */
const RESERVE_FATAL = new Set(['ENOSPC', 'EDQUOT', 'EIO']);

export class FlatImage extends ImageBase {
  /** Set for files we created sparse: all-zero chunks never written can stay holes. */
  private readonly fresh: WrittenChunks | null;
  /** Ranges of a fresh file reserved by reserve(): chunks in them left unwritten are punched back at close. */
  private readonly reserved: Array<readonly [number, number]> = [];

  constructor(fh: FileHandle, d: ImageDescription, fresh: boolean) {
    super(fh, d);
    this.fresh = fresh ? new WrittenChunks() : null;
  }

  protected async readRange(pos: number, into: Uint8Array): Promise<void> {
    const n = await readAt(this.fh, into, pos);
    // A raw file shorter than its size (cannot happen with our size check, but the file may shrink under us) reads zeros.
    if (n < into.length) into.fill(0, n);
  }

  /** The disk is the file's first bytes; a fixed VHD's footer, after them, is written once at creation. */
  protected override directWritesSupported(): boolean {
    return true;
  }

  /** The disk is the start of the file, so its blocks can be reserved in place (fixed VHDs and raw files). */
  protected override async reserveRange(pos: number, len: number): Promise<void> {
    const rc = await fileSpace(this.fh.fd, pos, len, false);
    if (rc === 0) {
      if (this.fresh) this.reserved.push([pos, pos + len]);
      return;
    }
    const code = getSystemErrorName(-rc);
    if (RESERVE_FATAL.has(code)) {
      throw Object.assign(new Error(`${code}: cannot reserve ${len} bytes at ${pos} in ${this.path}`), { code, errno: -rc, syscall: 'fallocate', path: this.path });
    }
  }

  /** A fresh file keeps its all-zero chunks as holes even where they were reserved: give those blocks back. */
  protected override async finishWrites(): Promise<void> {
    const fresh = this.fresh;
    if (!fresh) return;
    for (const [start, end] of this.reserved.splice(0)) {
      // Only whole chunks inside the range (partial chunks at its ends stay reserved, reading as zeros).
      const first = Math.ceil(start / CHUNK_SIZE);
      const last = Math.floor(end / CHUNK_SIZE);
      for (const [a, b] of fresh.unwrittenRuns(first, last)) {
        // Best effort: a refused punch leaves zero-reading blocks allocated, the content unchanged.
        await fileSpace(this.fh.fd, a * CHUNK_SIZE, (b - a) * CHUNK_SIZE, true);
      }
    }
  }

  /** The virtual disk is the start of the file. */
  protected spanInFile(pos: number): number {
    return pos;
  }

  /** The disk is the file's first bytes: any write may go from another thread (planned-io.ts). */
  protected override planWrite(pos: number, length: number): { position: number; skipZeroChunks: boolean } {
    const fresh = this.fresh;
    if (!fresh) return { position: pos, skipZeroChunks: false };
    // Skipping all-zero chunks is safe only where no earlier write put data that zeros must now replace.
    const first = Math.floor(pos / CHUNK_SIZE);
    const last = Math.ceil((pos + length) / CHUNK_SIZE);
    for (let c = first; c < last; c++) if (fresh.has(c)) return { position: pos, skipZeroChunks: false };
    return { position: pos, skipZeroChunks: true };
  }

  protected override notePlannedWrites(chunkRuns: readonly number[]): void {
    const fresh = this.fresh;
    if (!fresh) return;
    for (let i = 0; i + 1 < chunkRuns.length; i += 2) for (let c = chunkRuns[i]!; c < chunkRuns[i + 1]!; c++) fresh.add(c);
  }

  protected async writeRange(pos: number, data: Uint8Array): Promise<void> {
    if (!this.fresh) return this.writeData(data, pos);
    // Fresh sparse file: skip whole all-zero chunks that were never written (they are holes already).
    const end = pos + data.length;
    let runStart = pos;
    let p = pos;
    while (p < end) {
      const chunk = Math.floor(p / CHUNK_SIZE);
      const cEnd = Math.min((chunk + 1) * CHUNK_SIZE, end);
      const whole = p === chunk * CHUNK_SIZE && cEnd === (chunk + 1) * CHUNK_SIZE;
      if (whole && !this.fresh.has(chunk) && isAllZero(data.subarray(p - pos, cEnd - pos))) {
        if (p > runStart) await this.writeData(data.subarray(runStart - pos, p - pos), runStart);
        runStart = cEnd;
      } else {
        this.fresh.add(chunk);
      }
      p = cEnd;
    }
    if (end > runStart) await this.writeData(data.subarray(runStart - pos), runStart);
  }

  protected async discardRange(pos: number, len: number): Promise<void> {
    if (this.format === 'raw' && pos + len === this.size) {
      // The tail of a raw file: cut and re-extend, which frees the blocks (Node has no fallocate hole punch).
      await this.fh.truncate(pos);
      await this.fh.truncate(this.size);
      return;
    }
    // Otherwise zeros are written, except over chunks of a fresh file never written (holes already).
    const end = pos + len;
    const step = 16 << 20;
    for (let p = pos; p < end; ) {
      const chunk = Math.floor(p / CHUNK_SIZE);
      const cEnd = Math.min((chunk + 1) * CHUNK_SIZE, end);
      if (this.fresh && !this.fresh.has(chunk)) {
        p = cEnd;
        continue;
      }
      const n = this.fresh ? cEnd - p : Math.min(step, end - p);
      await writeVectorAt(this.fh, zeroPieces(n), p);
      p += n;
    }
  }

  async allocatedRanges(from: number, to: number): Promise<number[]> {
    // Node has no SEEK_DATA/SEEK_HOLE: a file with no blocks on disk is one hole; otherwise report all allocated.
    if (this.format === 'raw') {
      const st = await this.fh.stat();
      if (st.blocks === 0) return [];
    }
    return to > from ? [from, to] : [];
  }
}
