/**
 * One crypt stream's worker side: a piscina pool (the engine's XTS workers),
 * a slot ring of batch buffers, the job key shared with the workers, and the
 * ordered output queue; plus the loop that moves a run of payload bytes from
 * a byte source through batches. Closing waits for batches in flight, wipes
 * the key and the slots, and ends the pool.
 */
import type { BackendChoice } from '../../crypto/index.js';
import { CryptPool } from '../pool/crypt-pool.js';
import { EngineError } from '../errors.js';
import type { Progress } from '../run-options.js';
import { checkBatchBytes, type SectorTweak } from '../../volume/index.js';
import { SlotRing } from '../pool/slot-ring.js';
import { StreamCryptQueue } from './stream-crypt-queue.js';
import type { StreamOutput } from './stream-duplex.js';

export interface SessionOptions {
  readonly threads?: number;
  readonly backend?: BackendChoice;
  readonly batchBytes?: number;
  readonly onProgress?: (p: Progress) => void;
}

export interface CryptSession {
  readonly queue: StreamCryptQueue;
  readonly pool: CryptPool;
  /** Payload bytes the job will process, when known (for progress). */
  total: bigint;
  close(): Promise<void>;
}

/** Start the workers with a copy of `volumeKey` (the caller wipes its own). */
export function openCryptSession(o: SessionOptions, volumeKey: Uint8Array, encrypt: boolean, sectorSize: number, out: StreamOutput): CryptSession {
  const batchBytes = checkBatchBytes(o.batchBytes);
  const pool = new CryptPool({ threads: o.threads, backend: o.backend });
  const slots = new SlotRing(pool.threads * 2 + 1, batchBytes);
  const job = pool.startJob(volumeKey);
  const started = performance.now();
  let closed = false;
  const session: CryptSession = {
    total: 0n,
    pool,
    queue: new StreamCryptQueue(pool, job, encrypt, slots, out, sectorSize, () => {
      if (!o.onProgress) return;
      const secs = (performance.now() - started) / 1000;
      const done = session.queue.processed;
      o.onProgress({ bytesDone: done, bytesTotal: session.total > done ? session.total : done, rate: secs > 0 ? Number(done) / secs : 0 });
    }),
    async close() {
      if (closed) return;
      closed = true;
      try {
        await session.queue.settle();
        await pool.endJob(job);
      } finally {
        slots.wipe();
        await pool.destroy();
      }
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
    const b = await q.open();
    const room = b.slot.size;
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
      b.slot.view(room).set(piece, b.filled);
      b.filled += piece.length;
      taken += BigInt(piece.length);
    }
    const partial = b.filled % sectorSize;
    if (partial !== 0) {
      if (!dropPartial) {
        q.discard(b);
        throw new EngineError('ENGINE_UNSUPPORTED_SECTOR_SIZE', `the data ends ${partial} bytes into a ${sectorSize}-byte crypto sector; use sectorSize 512 (or give sourceSize)`);
      }
      b.filled -= partial;
      taken -= BigInt(partial);
    }
    await q.submit(b, tweak(start + taken - BigInt(b.filled)));
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
