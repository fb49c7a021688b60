/**
 * Moves batches through read -> XTS in a worker -> positional write, several
 * at once: while one slot is in a worker the next is being read and the
 * previous written. Memory in flight is the slot ring, whatever the image size.
 * Where the images can plan a batch's I/O (readPlan, writePlan), the worker
 * reads and writes it too, so this thread only hands out batches and keeps
 * the watermark; elsewhere (a dynamic output allocating blocks, an NBD source)
 * this thread reads or writes that side itself.
 * Checkpoints report the number of leading batches that are all written, for
 * the resume journal (the caller makes them durable first).
 */
import { BatchIoError, type BatchReport, type CryptJob, type CryptPool } from './crypt-pool.js';
import type { FileReadPlan, FileWritePlan, FileWriteReport } from '../../image/index.js';
import { EngineError } from '../errors.js';
import type { Batch } from './payload-ranges.js';
import type { SlotRing } from './slot-ring.js';
import type { SectorTweak } from '../../volume/index.js';

export type { SectorTweak };

export interface PipelineSpec {
  readonly pool: CryptPool;
  readonly job: CryptJob;
  readonly encrypt: boolean;
  readonly slots: SlotRing;
  readonly batches: AsyncIterable<Batch>;
  readonly sectorSize: number;
  /** Tweak of the sector at a payload offset. */
  tweak(payloadOffset: bigint): SectorTweak;
  read(payloadOffset: bigint, into: Uint8Array): Promise<void>;
  write(payloadOffset: bigint, data: Uint8Array): Promise<void>;
  /** How the worker reads the batch at a payload offset itself, or null (then `read` runs here). */
  readPlan?(payloadOffset: bigint, length: number): FileReadPlan | null;
  /** How the worker writes it itself, or null (then `write` runs here); each report goes to `wrotePlanned`. */
  writePlan?(payloadOffset: bigint, length: number): FileWritePlan | null;
  wrotePlanned?(report: FileWriteReport): void;
  /**
   * The block tag (block-tag.ts, under the job's tag key) of each `pieceBytes` of every batch's result, taken by the
   * worker while it holds the batch, each over `bitmapBytes` of 0xff first (worker-messages.ts); `firstIndex` gives the
   * block index of a batch's first piece, `tagged` gets the tags with the batch's payload offset.
   */
  readonly tagResults?: {
    readonly pieceBytes: number;
    readonly bitmapBytes: number;
    firstIndex(payloadOffset: bigint): number;
    tagged(payloadOffset: bigint, length: number, tags: readonly string[]): void;
  };
  /** The error a planned read or write failed with, as this side's own read or write would have thrown it. */
  plannedIoError?(side: 'read' | 'write', cause: Error): unknown;
  /** Batches below this index are already done (resume). */
  readonly skipBatches?: number;
  /** Called with n when batches [0, n) are all written; at most one at a time; once more after an abort (ENGINE_ABORTED). */
  checkpoint?(doneBatches: number): Promise<void>;
  /** Bytes of batches between checkpoints. */
  readonly checkpointBytes?: number;
  onBytes?(bytes: number): void;
  readonly signal?: AbortSignal;
}

export interface PipelineResult {
  /** Number of batches in the whole job (done before and now). */
  readonly batches: number;
  readonly bytes: bigint;
}

export function abortedError(signal: AbortSignal | undefined): EngineError {
  const reason = signal?.reason;
  const why = reason instanceof Error ? reason.message : reason !== undefined ? String(reason) : 'aborted';
  return new EngineError('ENGINE_ABORTED', `operation aborted (${why})`);
}

function interrupted(failure: unknown): boolean {
  return failure instanceof EngineError && failure.code === 'ENGINE_ABORTED';
}

export async function runSectorPipeline(p: PipelineSpec): Promise<PipelineResult> {
  const skip = p.skipBatches ?? 0;
  const inflight = new Set<Promise<void>>();
  const finished = new Set<number>();
  let watermark = skip;
  let failure: unknown = null;
  let total = 0;
  let bytes = 0n;
  let sinceCheckpoint = 0;
  let checkpointing: Promise<void> | null = null;
  // Batches [0, checkpointed) are recorded in the journal.
  let checkpointed = skip;
  const every = p.checkpointBytes ?? 256 << 20;

  const maybeCheckpoint = () => {
    if (!p.checkpoint || checkpointing || sinceCheckpoint < every || failure) return;
    sinceCheckpoint = 0;
    const n = watermark;
    checkpointing = p
      .checkpoint(n)
      .then(() => {
        checkpointed = n;
      })
      .catch((e) => {
        failure ??= e;
      })
      .finally(() => {
        checkpointing = null;
      });
  };

  // After an interrupt the batches already started still finish (at most one per slot), so the last checkpoint names
  // every batch that progress counted: batches finish out of order (one was seen to finish after the next twelve), and
  // the journal can only name the leading ones that are all written. Any other failure stops them where they are.
  const stopping = (): boolean => failure !== null && !interrupted(failure);

  const runBatch = async (b: Batch): Promise<void> => {
    const slot = await p.slots.acquire();
    try {
      if (stopping()) return;
      const view = slot.view(b.length);
      const read = p.readPlan?.(b.offset, b.length) ?? null;
      if (read === null) {
        await p.read(b.offset, view);
        if (stopping()) return;
      }
      const write = p.writePlan?.(b.offset, b.length) ?? null;
      const t = p.tweak(b.offset);
      let done: BatchReport;
      try {
        done = await p.pool.crypt(
          p.job,
          p.encrypt,
          { buffer: slot.buffer, offset: slot.offset, length: b.length, firstTweak: t.firstTweak, sectorSize: p.sectorSize, tweakStep: t.tweakStep },
          { read, write, ...(p.tagResults ? { tagPieces: { pieceBytes: p.tagResults.pieceBytes, firstIndex: p.tagResults.firstIndex(b.offset), bitmapBytes: p.tagResults.bitmapBytes } } : {}) },
        );
      } catch (e) {
        throw e instanceof BatchIoError ? (p.plannedIoError?.(e.side, e.cause as Error) ?? e.cause) : e;
      }
      if (p.tagResults && done.tags) p.tagResults.tagged(b.offset, b.length, done.tags);
      if (write !== null) {
        if (done.wrote) p.wrotePlanned?.(done.wrote);
      } else {
        if (stopping()) return;
        await p.write(b.offset, view);
      }
    } finally {
      p.slots.release(slot);
    }
    finished.add(b.index);
    while (finished.delete(watermark)) watermark++;
    sinceCheckpoint += b.length;
    p.onBytes?.(b.length);
    maybeCheckpoint();
  };

  for await (const b of p.batches) {
    total = b.index + 1;
    if (b.index < skip) continue;
    bytes += BigInt(b.length);
    if (failure) break;
    if (p.signal?.aborted) {
      failure = abortedError(p.signal);
      break;
    }
    // Wait for a free slot's worth of capacity before queueing more work.
    while (inflight.size >= p.slots.count && !failure) await Promise.race(inflight);
    if (failure) break;
    if (p.signal?.aborted) {
      failure = abortedError(p.signal);
      break;
    }
    const run: Promise<void> = runBatch(b).catch((e) => {
      failure ??= e;
    });
    inflight.add(run);
    void run.finally(() => inflight.delete(run));
  }
  await Promise.all(inflight);
  if (checkpointing) await checkpointing;
  // Whatever a batch in flight failed with once the signal fired (a worker task cancelled, a slot released), the
  // run was interrupted: report it as such, so that it is kept for --resume.
  if (p.signal?.aborted && !interrupted(failure)) failure = abortedError(p.signal);
  // An interrupted run is kept for --resume: one last checkpoint saves the batches written since the previous one
  // (the checkpoint makes them durable before the journal names them; the watermark counts only written batches).
  // Any other failure leaves the journal as is.
  if (interrupted(failure) && p.checkpoint && watermark > checkpointed) {
    const last = failure as EngineError;
    await p.checkpoint(watermark).catch((e) => {
      // The previous journal still stands (it is replaced atomically); the abort stays the error, this its cause.
      failure = new EngineError('ENGINE_ABORTED', `${last.message}; its last checkpoint failed, so --resume redoes the batches since the one before`, { cause: e });
    });
  }
  if (failure) throw failure;
  return { batches: total, bytes };
}
