import type { ChsGeometry } from './chs-geometry.js';
import type { DynamicHeader } from './vhd-dynamic-header.js';
import type { VhdFooter } from './vhd-footer.js';
import type { FileReadPlan, FileWritePlan, FileWriteReport } from './planned-io.js';

export type ImageFormat = 'vhd-fixed' | 'vhd-dynamic' | 'vhd-differencing' | 'raw';

/** A run of the virtual disk; `allocated: false` reads as zeros. */
export interface Extent {
  readonly offset: bigint;
  readonly length: bigint;
  readonly allocated: boolean;
}

/** A virtual disk opened for reading. */
export interface DiskImage {
  readonly format: ImageFormat;
  readonly path: string;
  /** Virtual disk size in bytes (VHD: the footer's current size). */
  readonly virtualSize: bigint;
  readonly uuid?: string;
  readonly geometry?: ChsGeometry;
  /** Dynamic and differencing disks: bytes per block. */
  readonly blockSize?: number;
  readonly writable: boolean;
  /** Non-fatal findings when opening (e.g. damaged end footer replaced by the copy at offset 0). */
  readonly warnings: readonly string[];
  /** VHD only: the footer in use. */
  readonly footer?: VhdFooter;
  /** Dynamic and differencing only. */
  readonly dynamicHeader?: DynamicHeader;
  /** Differencing only: the opened parent (itself possibly differencing). */
  readonly parent?: DiskImage;
  /**
   * Merged, in order, covering the whole disk (or just `range`, for block-status queries);
   * differencing: allocated anywhere in the chain.
   */
  extents(range?: { offset: bigint; length: bigint }): AsyncIterable<Extent>;
  /** Fill `into` from `offset`; unallocated ranges read as zeros. */
  read(offset: bigint, into: Uint8Array): Promise<void>;
  /**
   * Where [offset, offset + length) lies, contiguous and complete, in this image's own file (for readers of
   * the file itself, such as the NBD server's reply threads); null when it is not so (a hole, a parent, two blocks).
   */
  fileSpan(offset: bigint, length: number): number | null;
  /**
   * How a thread of this process reads [offset, offset + length) with positional reads of this image's own open
   * descriptor (planned-io.ts), valid until close; null when the image cannot say (a parent's data, a remote source).
   */
  readPlan?(offset: bigint, length: number): FileReadPlan | null;
  close(): Promise<void>;
}

/** A virtual disk opened for writing. */
export interface WritableImage extends DiskImage {
  write(offset: bigint, data: Uint8Array): Promise<void>;
  /** Make the range read as zeros, releasing space where the format allows. */
  discard(offset: bigint, length: bigint): Promise<void>;
  /** Make every completed write durable (fdatasync). */
  flush(): Promise<void>;
  /** Start writing completed writes out now without waiting (no durability; see native-io.ts). */
  startWriteback(): void;
  /**
   * From now on, write large aligned data straight to the device (O_DIRECT; see direct-writes.ts), other
   * writes as before. Resolves true when this image and file system can; flush() still gives durability.
   */
  useDirectWrites(): Promise<boolean>;
  /**
   * Reserve the file's blocks for a range about to be written (fallocate; see FlatImage), so direct writes
   * overwrite allocated blocks; a no-op where the format allocates as it writes or the file system cannot.
   * Rejects with the errno's code on ENOSPC, EDQUOT or EIO.
   */
  reserve(offset: bigint, length: bigint): Promise<void>;
  /**
   * How a thread of this process writes [offset, offset + length) itself (planned-io.ts), or null when such a write
   * must go through write() (a dynamic VHD allocates blocks as it writes). Each planned write is reported back with
   * wrotePlanned before the next flush.
   */
  writePlan?(offset: bigint, length: number): FileWritePlan | null;
  wrotePlanned?(report: FileWriteReport): void;
}
