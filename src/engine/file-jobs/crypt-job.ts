/**
 * One whole-image pass: batches of the payload through the worker pool from a
 * source image into the temp output, with checkpoints into the resume journal.
 */
import type { DiskImage, FileWriteReport, WritableImage } from '../../image/index.js';
import { availableBackends } from '../../crypto/index.js';
import type { CryptPool } from '../pool/crypt-pool.js';
import type { PayloadLayout } from '../../volume/index.js';
import { EngineError, mapWriteError } from '../errors.js';
import { batchesOf, payloadRanges, rangesTotal, type RangeSelection } from '../pool/payload-ranges.js';
import { writeJournal, type JournalState } from './resume-journal.js';
import { runSectorPipeline } from '../pool/sector-pipeline.js';
import { SlotRing } from '../pool/slot-ring.js';
import type { RunOptions, RunResult } from '../run-options.js';

export interface CryptJobSpec {
  readonly encrypt: boolean;
  readonly input: DiskImage;
  readonly output: WritableImage;
  readonly layout: PayloadLayout;
  /** Which payload ranges to process, in input-image coordinates via `selection.base`. */
  readonly selection: RangeSelection;
  /** Where payload offset 0 sits in the input and the output virtual disks. */
  readonly inputBase: bigint;
  readonly outputBase: bigint;
  readonly volumeKey: Uint8Array;
  readonly journalPath: string;
  readonly journal: Omit<JournalState, 'doneBatches'>;
  readonly skipBatches: number;
  /**
   * Tag the output's payload in pieces of `pieceBytes` as it is written (CryptJobStats.pieceTags), under the 32-byte
   * `key` (the caller's: it wipes it), each tag over `bitmapBytes` of 0xff first (a dynamic output's blocks; 0 for a
   * fixed one's pieces); the output's virtual-disk offset of every batch must fall on a piece.
   */
  readonly tagPieces?: { readonly pieceBytes: number; readonly key: Uint8Array; readonly bitmapBytes: number };
  /** startOutputWrites for this output, when the caller started it early; else the job starts it. */
  readonly outputWrites?: Promise<boolean>;
}

export interface CryptJobStats {
  readonly bytesProcessed: bigint;
  readonly bytesTotal: bigint;
  readonly backend: string;
  readonly kernel: string;
  readonly threads: number;
  readonly seconds: number;
  /**
   * Seconds of the pass over the payload alone: from the first batch handed out (the output's blocks reserved, the
   * workers holding the key) to the last one written and checkpointed.
   */
  readonly dataSeconds: number;
  /** True when the output's data went straight to the device (O_DIRECT). */
  readonly directWrites: boolean;
  /** With tagPieces: the block tag (hex) of every whole piece written by this run, by output virtual-disk offset. */
  readonly pieceTags: ReadonlyMap<bigint, string>;
}

/**
 * Bytes reserved per fallocate call: one call over a whole GiB holds the file's inode lock for ~0.1 s (tmpfs zeroes
 * every page), and the header written meanwhile would wait for all of it.
 */
const RESERVE_STEP = 64n << 20n;

/**
 * Open the output for direct writes and, where they are on, reserve the blocks of its payload: reserved blocks let
 * the file system run our direct writes side by side (ext4 serialises direct writes into holes; docs/performance.md
 * has the effect on a decrypt). Resolves whether direct writes are on. It works on the output's descriptor: the
 * output must stay open until it settles.
 */
export async function startOutputWrites(spec: Pick<CryptJobSpec, 'input' | 'output' | 'selection' | 'outputBase'>): Promise<boolean> {
  const directWrites = await spec.output.useDirectWrites();
  if (directWrites) {
    try {
      for await (const r of payloadRanges(() => spec.input.extents(), spec.selection)) {
        for (let at = r.start; at < r.end; at += RESERVE_STEP) {
          const n = r.end - at < RESERVE_STEP ? r.end - at : RESERVE_STEP;
          await spec.output.reserve(spec.outputBase + at, n);
        }
      }
    } catch (e) {
      throw mapWriteError(e, spec.output.path);
    }
  }
  return directWrites;
}

/**
 * Run the job; `pool` (started early by the caller so workers load while keys are made) has its job ended (every key
 * copy wiped) and is being destroyed when this returns: the caller's JobHold.release awaits that.
 */
export async function runCryptJob(spec: CryptJobSpec, opts: RunOptions, pool: CryptPool): Promise<CryptJobStats> {
  const started = performance.now();
  const batchBytes = spec.journal.batchBytes;
  const ranges = () => payloadRanges(() => spec.input.extents(), spec.selection);
  const bytesTotal = await rangesTotal(ranges());
  // Enough slots that every worker has its next batch queued while it runs one, and (two more) the main thread's own
  // reads or writes, where the images cannot plan them, overlap the crypto. Inline, one batch runs at a time: a
  // second slot lets such a read or write overlap it. Where both images plan their I/O, the slots beyond those would
  // only be fresh pages to fault in (each first touch traps to the hypervisor on some VMs).
  const planned = (spec.output.format === 'raw' || spec.output.format === 'vhd-fixed') && spec.input.readPlan !== undefined && spec.input.format !== 'vhd-differencing';
  const slots = new SlotRing(pool.usesWorkers ? pool.threads * 2 + (planned ? 0 : 2) : planned ? 1 : 2, batchBytes);
  // Batches are large and aligned: skip the page cache, whose copy and writeback cost more CPU than the crypto.
  const directWrites = await (spec.outputWrites ?? startOutputWrites(spec));
  const job = pool.startJob(spec.volumeKey, spec.tagPieces?.key);
  const dataStarted = performance.now();
  let dataEnded = dataStarted;
  let done = 0n;
  let processed = 0n;
  let skippedBytes = 0n;
  const pieceTags = new Map<bigint, string>();
  const piece = spec.tagPieces?.pieceBytes ?? 0;
  const report = () => {
    const secs = (performance.now() - started) / 1000;
    opts.onProgress?.({ bytesDone: done, bytesTotal, rate: secs > 0 ? Number(processed) / secs : 0 });
  };
  try {
    // Batches already durable before a resume count as done.
    const batches = (async function* () {
      for await (const b of batchesOf(ranges(), batchBytes)) {
        if (b.index < spec.skipBatches) skippedBytes += BigInt(b.length);
        yield b;
      }
    })();
    const output = spec.output;
    const where = output.path;
    await runSectorPipeline({
      pool,
      job,
      encrypt: spec.encrypt,
      slots,
      batches,
      sectorSize: spec.layout.sectorSize,
      tweak: (off) => spec.layout.tweak(off),
      read: (off, into) => spec.input.read(spec.inputBase + off, into),
      // Off the main thread wherever the images can say where the bytes lie (flat files, allocated dynamic blocks).
      ...(spec.input.readPlan ? { readPlan: (off: bigint, n: number) => spec.input.readPlan!(spec.inputBase + off, n) } : {}),
      ...(output.writePlan && output.wrotePlanned
        ? { writePlan: (off: bigint, n: number) => output.writePlan!(spec.outputBase + off, n), wrotePlanned: (r: FileWriteReport) => output.wrotePlanned!(r) }
        : {}),
      plannedIoError: (side, cause) => (side === 'write' ? mapWriteError(cause, where) : cause),
      write: async (off, data) => {
        try {
          await output.write(spec.outputBase + off, data);
          // Keep the disk busy during the job rather than leaving all of it to the closing fsync.
          output.startWriteback();
        } catch (e) {
          throw mapWriteError(e, where);
        }
      },
      skipBatches: spec.skipBatches,
      ...(piece > 0
        ? {
            tagResults: {
              pieceBytes: piece,
              bitmapBytes: spec.tagPieces?.bitmapBytes ?? 0,
              firstIndex: (off: bigint) => {
                const at = spec.outputBase + off;
                if (at % BigInt(piece) !== 0n) throw new EngineError('ENGINE_BAD_ARGUMENT', `tagPieces: a batch at output offset ${at} does not start on a ${piece}-byte piece`);
                return Number(at / BigInt(piece));
              },
              // Whole pieces only: a short last one is read back with the link's own size (a VHD's may be rounded up).
              tagged: (off: bigint, length: number, tags: readonly string[]) => {
                for (let i = 0; i < tags.length && (i + 1) * piece <= length; i++) pieceTags.set(spec.outputBase + off + BigInt(i * piece), tags[i]!);
              },
            },
          }
        : {}),
      checkpoint: async (n) => {
        try {
          await output.flush();
        } catch (e) {
          throw mapWriteError(e, where);
        }
        await writeJournal(spec.journalPath, { ...spec.journal, doneBatches: n });
      },
      onBytes: (n) => {
        processed += BigInt(n);
        done = processed + skippedBytes;
        report();
      },
      signal: opts.signal,
      ...(opts.checkpointBytes !== undefined ? { checkpointBytes: opts.checkpointBytes } : {}),
    });
    dataEnded = performance.now();
    done = processed + skippedBytes;
    report();
  } finally {
    try {
      await pool.endJob(job);
    } finally {
      slots.retire();
      // The workers hold no key now (endJob); they stop while the caller commits the output, and its JobHold waits
      // for them (destroy returns the same promise) before the job returns.
      pool.destroy().catch(() => undefined);
    }
  }
  const ran = pool.ran ?? expectedBackend(opts.backend ?? 'auto');
  return {
    bytesProcessed: processed,
    bytesTotal,
    backend: ran.backend,
    kernel: ran.kernel,
    threads: pool.threads,
    seconds: (performance.now() - started) / 1000,
    dataSeconds: (dataEnded - dataStarted) / 1000,
    directWrites,
    pieceTags,
  };
}

/** What a choice resolves to on this machine, for runs that had nothing to process. */
function expectedBackend(choice: string): { backend: string; kernel: string } {
  const all = availableBackends();
  const hit = choice === 'auto' ? all[0] : all.find((b) => b.backend === choice);
  return hit ?? { backend: choice, kernel: 'unavailable' };
}

/** The figures of a run's result that come from its crypto run and its clock. */
type RunFigures = 'bytesProcessed' | 'bytesTotal' | 'backend' | 'kernel' | 'threads' | 'directWrites' | 'seconds' | 'dataSeconds' | 'mbPerSecond';

/** A job's RunResult: its own facts, and the figures of its crypto run over the whole job's time since `started`. */
export function runResultOf(stats: CryptJobStats, started: number, facts: Omit<RunResult, RunFigures>): RunResult {
  const seconds = (performance.now() - started) / 1000;
  return {
    ...facts,
    bytesProcessed: stats.bytesProcessed,
    bytesTotal: stats.bytesTotal,
    backend: stats.backend,
    kernel: stats.kernel,
    threads: stats.threads,
    directWrites: stats.directWrites,
    seconds,
    dataSeconds: stats.dataSeconds,
    mbPerSecond: seconds > 0 ? Number(stats.bytesProcessed) / 1e6 / seconds : 0,
  };
}
