/**
 * One crypt stream's crypto side: the XTS key (on this thread with the
 * native kernel, else the engine's worker pool and a slot ring of shared
 * batch buffers) and the ordered output queue (stream-crypt-queue.ts); plus
 * the loop that moves a run of payload bytes from a byte source through
 * batches. Closing waits for batches in flight, wipes the key and every batch
 * still held, and ends the pool.
 */
import { createXts, type BackendChoice, type Xts } from '../../crypto/index.js';
import { CryptPool, nativeChosen } from '../pool/crypt-pool.js';
import { EngineError } from '../errors.js';
import type { Progress } from '../run-options.js';
import { checkBatchBytes, type SectorTweak } from '../../volume/index.js';
import { SlotRing } from '../pool/slot-ring.js';
import { StreamCryptQueue } from './stream-crypt-queue.js';
import type { StreamOutput } from './stream-duplex.js';
import { nativeAddon } from '../../native-addon.js';

export interface SessionOptions {
  readonly threads?: number;
  readonly backend?: BackendChoice;
  readonly batchBytes?: number;
  readonly onProgress?: (p: Progress) => void;
}

export interface CryptSession {
  readonly queue: StreamCryptQueue;
  /** Worker threads (1: this thread). */
  readonly threads: number;
  /** What ran, once a batch has. */
  readonly ran: { readonly backend: string; readonly kernel: string } | null;
  /** Payload bytes the job will process, when known (for progress). */
  total: bigint;
  close(): Promise<void>;
}

/**
 * A batch crypted on this thread, which is also a chunk the reader gets. Each is new memory (the reader keeps what
 * it is given): with the C heap keeping freed chunks (keepFreedChunks below) a 1 MiB batch is reused heap, not fresh
 * pages, and each chunk costs the reader one write call, not eight (a 1 GiB encrypt stream fed 1 MiB chunks, to
 * /dev/null: 0.57-0.75 s with 1 MiB batches, 0.82-1.07 s with 128 KiB; with glibc's default thresholds 2 MiB
 * batches faulted in 73 000-91 000 pages per GiB, which is why they were 128 KiB before).
 */
const HERE_BATCH_BYTES = 1 << 20;

/**
 * Chunks a stream makes (and its reader's) come from the C heap rather than fresh mappings, and up to
 * KEEP_FREED_BYTES of what the collector frees stays in the process for the next chunks: every chunk handed to the
 * reader is new memory, and a fresh page's first touch faults (heap_trim.cc, keepFreedHeap). These are the values
 * glibc's own dynamic thresholds reach at their ceiling (mallopt(3): 32 MiB, twice that kept), set from the start:
 * glibc lowers them again each time the collector frees a run of chunks at once and trims it. A lower mapping
 * threshold would send larger chunks to fresh mappings for good (setting it ends the dynamic adjustment): 4 MiB
 * chunks then took 2.1-3.1 s per GiB instead of 0.8-1.0 s. A 1 GiB encrypt stream fed 1 MiB chunks with 128 KiB
 * batches: 40 000-52 000 faults and 1.39-1.56 s with glibc's defaults, 22 000 and 0.90-1.11 s so.
 */
const HEAP_CHUNK_MAX = 32 << 20;
const KEEP_FREED_BYTES = 64 << 20;

/** Have the C heap keep what streams free (once per process; the user's own malloc tuning wins). */
function keepFreedChunks(): void {
  const keep = nativeAddon()?.keepFreedHeap;
  if (typeof keep === 'function') (keep as (mmapThreshold: number, trimThreshold: number) => boolean)(HEAP_CHUNK_MAX, KEEP_FREED_BYTES);
}

/**
 * Start the crypto with a copy of `volumeKey` (the caller wipes its own). With the native kernel and no thread
 * count asked for, batches are crypted on this thread as they fill (stream-crypt-queue.ts): the kernel gets
 * through a GiB in about 50 ms of one core, less than the hand-offs to and from workers cost, and the main
 * thread moves every byte of a stream anyway. WASM and JS, or a thread count asked for, use the worker pool.
 */
export function openCryptSession(o: SessionOptions, volumeKey: Uint8Array, encrypt: boolean, sectorSize: number, out: StreamOutput): CryptSession {
  const here = o.threads === undefined && nativeChosen(o.backend);
  keepFreedChunks();
  const batchBytes = here && o.batchBytes === undefined ? HERE_BATCH_BYTES : checkBatchBytes(o.batchBytes);
  let xts: Xts | null = null;
  let pool: CryptPool | null = null;
  let queue: StreamCryptQueue;
  const started = performance.now();
  const progress = () => {
    if (!o.onProgress) return;
    const secs = (performance.now() - started) / 1000;
    const done = queue.processed;
    o.onProgress({ bytesDone: done, bytesTotal: session.total > done ? session.total : done, rate: secs > 0 ? Number(done) / secs : 0 });
  };
  let close: () => Promise<void>;
  if (here) {
    const x = (xts = createXts(volumeKey, { backend: o.backend }));
    // One batch being filled, one being emitted.
    queue = new StreamCryptQueue({ kind: 'here', xts: x }, encrypt, 2, batchBytes, out, sectorSize, progress);
    close = async () => {
      try {
        queue.wipe();
      } finally {
        x.dispose();
      }
    };
  } else {
    const p = (pool = new CryptPool({ threads: o.threads, backend: o.backend }));
    const count = p.threads * 2 + 1;
    const ring = new SlotRing(count, batchBytes);
    const job = p.startJob(volumeKey);
    queue = new StreamCryptQueue({ kind: 'workers', pool: p, job, slots: ring }, encrypt, count, batchBytes, out, sectorSize, progress);
    close = async () => {
      try {
        await queue.settle();
        await p.endJob(job);
      } finally {
        ring.wipe();
        await p.destroy();
      }
    };
  }
  let closed = false;
  const session: CryptSession = {
    total: 0n,
    queue,
    threads: pool?.threads ?? 1,
    get ran() {
      return xts !== null ? (queue.batches > 0 ? { backend: xts.backend, kernel: xts.kernel } : null) : pool!.ran;
    },
    async close() {
      if (closed) return;
      closed = true;
      await close();
    },
  };
  return session;
}

/** Where a run's bytes come from: up to `max` bytes, or null at its end. */
export type ByteSource = (max: number) => Promise<Uint8Array | null>;

/**
 * Move payload bytes from `source` through batches, the first at payload
 * offset `start`, at most `limit` bytes; returns how many were taken. A
 * partial last crypto sector is an error, or dropped (`dropPartial`, as
 * dm-crypt ignores one at the end of a dynamic segment).
 */
export async function cryptRun(
  s: CryptSession,
  source: ByteSource,
  start: bigint,
  limit: bigint | null,
  sectorSize: number,
  tweak: (payloadOffset: bigint) => SectorTweak,
  dropPartial: boolean,
): Promise<bigint> {
  const q = s.queue;
  let taken = 0n;
  let ended = false;
  while (!ended && (limit === null || taken < limit)) {
    const b = await q.open(limit === null || limit - taken >= BigInt(q.batchBytes) ? q.batchBytes : Number(limit - taken), tweak(start + taken));
    const room = b.room.length;
    while (b.filled < room) {
      const want = limit === null ? room - b.filled : Math.min(room - b.filled, Number(limit - taken < BigInt(room) ? limit - taken : BigInt(room)));
      if (want <= 0) {
        ended = true;
        break;
      }
      const piece = await source(want);
      if (!piece) {
        ended = true;
        break;
      }
      q.put(b, piece);
      taken += BigInt(piece.length);
    }
    const partial = b.filled % sectorSize;
    if (partial !== 0) {
      if (!dropPartial) {
        q.discard(b);
        throw new EngineError('ENGINE_UNSUPPORTED_SECTOR_SIZE', `the data ends ${partial} bytes into a ${sectorSize}-byte crypto sector; use sectorSize 512 (or give sourceSize)`);
      }
      q.trim(b, partial);
      taken -= BigInt(partial);
    }
    await q.submit(b);
  }
  return taken;
}

/** A byte source over bytes in memory. */
export function memorySource(bytes: Uint8Array): ByteSource {
  let at = 0;
  return async (max) => {
    if (at >= bytes.length) return null;
    const n = Math.min(max, bytes.length - at);
    const piece = bytes.subarray(at, at + n);
    at += n;
    return piece;
  };
}

/** A byte source of `n` zero bytes (unallocated blocks written out with noSparse). */
export function zeroSource(n: number): ByteSource {
  const zeros = new Uint8Array(Math.min(n, 1 << 20));
  let left = n;
  return async (max) => {
    if (left <= 0) return null;
    const k = Math.min(max, left, zeros.length);
    left -= k;
    return zeros.subarray(0, k);
  };
}
