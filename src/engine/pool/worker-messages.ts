/** The messages between the engine and its piscina workers: plain typed objects, no key bytes except by shared reference. */
import type { BackendChoice } from '../../crypto/index.js';
import type { ErrorCode } from '../../error-codes.js';
import type { FileReadPlan, FileWritePlan, FileWriteReport } from '../../image/index.js';

/** A batch of sectors inside a shared slot, and how its tweaks run. */
export interface SectorBatchRef {
  readonly buffer: SharedArrayBuffer;
  readonly offset: number;
  readonly length: number;
  readonly firstTweak: bigint;
  readonly sectorSize: number;
  readonly tweakStep: number;
}

/** Encrypt or decrypt one batch of sectors in place, inside a shared slot. */
export interface CryptTask extends SectorBatchRef {
  readonly kind: 'crypt';
  /** Identifies the job's key; a worker keeps one Xts per job until the dispose task. */
  readonly jobId: string;
  /** The job key, shared once per job (never copied into a message); wiped by the engine at job end. */
  readonly key: SharedArrayBuffer;
  readonly keyLength: number;
  readonly backend: BackendChoice;
  readonly encrypt: boolean;
  /** Read the batch into the slot first, from the source's descriptor (else the slot already holds it). */
  readonly read: FileReadPlan | null;
  /** Write the batch from the slot afterwards, to the output's descriptors (else the engine writes it). */
  readonly write: FileWritePlan | null;
  /**
   * Tag the batch's result in pieces (the output's manifest blocks, block-tag.ts) under `tagKey`, the first piece
   * being block `firstIndex`, each tag over `bitmapBytes` of 0xff first (a dynamic block's sector bitmap, every
   * sector present; 0 for a fixed output's pieces); null for none.
   */
  readonly tagPieces: { readonly pieceBytes: number; readonly firstIndex: number; readonly bitmapBytes: number } | null;
  /** The job's 32-byte block tag key, shared like `key` and wiped with it; null when the job tags nothing. */
  readonly tagKey: SharedArrayBuffer | null;
}

/** Drop the job's Xts; every worker takes exactly one (the barrier holds each until all have arrived). */
export interface DisposeTask {
  readonly kind: 'dispose';
  readonly jobId: string;
  /** Int32 counter shared by the dispose tasks of one job. */
  readonly barrier: SharedArrayBuffer;
  readonly parties: number;
}

/** Load the backend ahead of the first batch (module, addon or WASM compile), with a throwaway key. */
export interface WarmTask {
  readonly kind: 'warm';
  readonly backend: BackendChoice;
}

export type WorkerTask = CryptTask | DisposeTask | WarmTask;

export type WorkerReply =
  | {
      readonly ok: true;
      readonly backend: string;
      readonly kernel: string;
      readonly wrote?: FileWriteReport;
      /** The hex tag of each tagPieces piece of the result, in order (the last may be shorter). */
      readonly tags?: readonly string[];
    }
  | {
      readonly ok: false;
      readonly code: ErrorCode;
      readonly message: string;
      /** A failed read or write system call: its errno name (ENOSPC, EIO) and which side failed. */
      readonly errno?: string;
      readonly side?: 'read' | 'write';
    };
