import type { DirectReadFile, DirectReadPlan } from './direct-replies.js';

/** What the NBD server exports: a byte range with optional write, flush, trim, zero and allocation queries. */

/** One extent of a BLOCK_STATUS answer for base:allocation (flags: NBD_STATE_HOLE | NBD_STATE_ZERO). */
export interface BlockStatusExtent {
  readonly length: number;
  readonly flags: number;
}

/** A piece of a sparse read: `data` null means the bytes read as zeros (a hole). */
export interface ReadSegment {
  readonly length: number;
  readonly data: Uint8Array | null;
}

/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE (proto.md "Size constraints"). */
export interface BlockSizeConstraints {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** A backing's native read path (direct-replies.ts): its container file, read by per-connection reply threads. */
export interface DirectReadPath {
  readonly file: DirectReadFile;
  /** How to read [offset, offset+length) whole from the file, or null when read()/readSparse() must serve it. */
  plan(offset: bigint, length: number): DirectReadPlan | null;
}

/**
 * The export behind an NBD server. The server validates every request
 * (range, alignment, read-only) before calling these, so a backing sees only
 * in-range requests with lengths no larger than `blockSize.maximum`
 * (TRIM/WRITE_ZEROES may be larger: they carry no payload).
 */
export interface NbdBacking {
  readonly size: bigint;
  readonly blockSize: BlockSizeConstraints;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  /** True when flush on one connection makes every connection's writes durable (one shared backing). */
  readonly canMultiConn: boolean;
  /** A one-line description for NBD_INFO_DESCRIPTION. */
  readonly description?: string;
  /** Present when READs can be answered by the native reply threads. */
  readonly direct?: DirectReadPath;
  read(offset: bigint, length: number): Promise<Uint8Array>;
  /** Like read, but holes may come back as null segments (sent as OFFSET_HOLE chunks); lengths sum to `length`. */
  readSparse?(offset: bigint, length: number): Promise<ReadSegment[]>;
  write(offset: bigint, data: Uint8Array, fua: boolean): Promise<void>;
  flush(): Promise<void>;
  trim(offset: bigint, length: number): Promise<void>;
  zero(offset: bigint, length: number, mayTrim: boolean): Promise<void>;
  /** Allocation from `offset` on: consecutive extents, at least one, each nonzero; may cover less or more than `length`. */
  blockStatus(offset: bigint, length: number): Promise<BlockStatusExtent[]>;
  /** Flush and release everything; called once when the server shuts down. */
  close(): Promise<void>;
}
