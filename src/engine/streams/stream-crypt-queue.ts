/**
 * Ordered output of a crypt stream: literal bytes (headers, BAT, bitmaps) and
 * batches of sectors, emitted strictly in the order they were queued.
 *
 * Two ways to crypt a batch (BatchCrypto):
 * - workers: the batch is copied into a shared slot of the ring, the pool
 *   encrypts or decrypts it in place, several at once, and the reader gets a
 *   copy of the slot (which is reused);
 * - here (the native kernel on this thread): each batch is a buffer of its
 *   own; the input's pieces are encrypted or decrypted straight into it (XTS
 *   with a separate destination, so reading the input and writing the batch
 *   are one pass over memory) and the buffer itself goes to the reader. A
 *   worker hand-off would cost more than the kernel's ~50 ms per GiB, and on a
 *   stream the main thread moves every byte anyway.
 * Either way at most `count` batches are out at once, and every batch still
 * held (plaintext on its way in or out) is wiped when the stream closes.
 */
import type { CryptJob, CryptPool } from '../pool/crypt-pool.js';
import type { Xts } from '../../crypto/index.js';
import type { SectorTweak } from '../../volume/index.js';
import type { Slot, SlotRing } from '../pool/slot-ring.js';
import type { StreamOutput } from './stream-duplex.js';

/** Where a stream's batches are crypted. */
export type BatchCrypto =
  | { readonly kind: 'workers'; readonly pool: CryptPool; readonly job: CryptJob; readonly slots: SlotRing }
  | { readonly kind: 'here'; readonly xts: Xts };

type Entry =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'batch'; readonly batch: OpenBatch; readonly length: number; readonly done: Promise<void> | null; readonly state: { settled: boolean } };

/** A batch being filled by the parser before it is queued. */
export interface OpenBatch {
  /** Where the batch is filled: a slot's view (workers), or a buffer of its own (here). */
  readonly room: Uint8Array;
  /** The shared slot under `room` (workers), else null. */
  readonly slot: Slot | null;
  /** The tweak of the batch's first sector. */
  readonly tweak: SectorTweak;
  /** Bytes filled so far. */
  filled: number;
  /** Here: bytes at the end of `filled` not crypted yet (the start of a sector split between input pieces). */
  pending: number;
}

const ZERO_CHUNK = 1 << 20;

export class StreamCryptQueue {
  private readonly entries: Entry[] = [];
  /** Batches out (being filled, being crypted, or waiting to be emitted); at most `count`. */
  private busy = 0;
  private failure: unknown = null;
  /** Batches of their own not yet handed to the reader: wiped by wipe(). */
  private readonly owned = new Set<Uint8Array>();
  /** Payload bytes put through AES-XTS. */
  processed = 0n;
  /** Batches queued. */
  batches = 0;

  constructor(
    private readonly crypto: BatchCrypto,
    private readonly encrypt: boolean,
    /** Batches out at once, and the most bytes in one. */
    private readonly count: number,
    readonly batchBytes: number,
    private readonly out: StreamOutput,
    private readonly sectorSize: number,
    private readonly onBatch?: (bytes: number) => void,
  ) {}

  /** Queue bytes to emit as they are (the caller does not reuse them). */
  async bytes(b: Uint8Array): Promise<void> {
    if (b.length === 0) return;
    this.entries.push({ kind: 'bytes', bytes: b });
    await this.emitReady();
  }

  /** Queue `n` zero bytes. */
  async zeros(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, ZERO_CHUNK);
      await this.bytes(new Uint8Array(k));
      n -= k;
    }
  }

  /**
   * Room for a batch of up to `want` bytes (at most batchBytes) whose first sector has `tweak`, waiting for the
   * oldest batch to be emitted when all are out.
   */
  async open(want: number, tweak: SectorTweak): Promise<OpenBatch> {
    for (;;) {
      this.check();
      if (this.busy < this.count) {
        this.busy++;
        const c = this.crypto;
        if (c.kind === 'here') {
          // Every byte the reader gets is set before it is emitted (crypted into place): no zeroing first.
          const room = Buffer.allocUnsafeSlow(Math.max(1, Math.min(want, this.batchBytes)));
          this.owned.add(room);
          return { room, slot: null, tweak, filled: 0, pending: 0 };
        }
        // A slot is free, so acquire() resolves at once.
        const slot = await c.slots.acquire();
        return { room: slot.view(slot.size), slot, tweak, filled: 0, pending: 0 };
      }
      await this.emitHead();
    }
  }

  /** Add `piece` (at most the batch's room left) to the batch. */
  put(b: OpenBatch, piece: Uint8Array): void {
    const c = this.crypto;
    if (c.kind === 'workers') {
      b.room.set(piece, b.filled);
      b.filled += piece.length;
      return;
    }
    const ss = this.sectorSize;
    let at = 0;
    if (b.pending > 0) {
      // Complete the sector split between pieces, then crypt it in place.
      const k = Math.min(ss - b.pending, piece.length);
      b.room.set(piece.subarray(0, k), b.filled);
      b.filled += k;
      b.pending += k;
      at = k;
      if (b.pending < ss) return;
      b.pending = 0;
      this.cryptHere(c.xts, b, b.filled - ss, piece.subarray(0, 0));
    }
    const whole = piece.length - at - ((piece.length - at) % ss);
    if (whole > 0) {
      this.cryptHere(c.xts, b, b.filled, piece.subarray(at, at + whole));
      b.filled += whole;
      at += whole;
    }
    if (at < piece.length) {
      // The start of a sector: kept until the next piece completes it.
      b.room.set(piece.subarray(at), b.filled);
      b.pending = piece.length - at;
      b.filled += b.pending;
    }
  }

  /** Crypt `src` into the batch at `offset` (an empty `src`: the sector already at `offset`, in place). */
  private cryptHere(xts: Xts, b: OpenBatch, offset: number, src: Uint8Array): void {
    const n = src.length === 0 ? this.sectorSize : src.length;
    const dst = b.room.subarray(offset, offset + n);
    const data = src.length === 0 ? dst : src;
    const firstTweak = b.tweak.firstTweak + BigInt((offset / this.sectorSize) * b.tweak.tweakStep);
    const opts = { out: dst, tweakStep: b.tweak.tweakStep };
    if (this.encrypt) xts.encryptSectors(data, firstTweak, this.sectorSize, opts);
    else xts.decryptSectors(data, firstTweak, this.sectorSize, opts);
  }

  /** Forget the last `n` bytes put (a partial last sector that is dropped). */
  trim(b: OpenBatch, n: number): void {
    b.filled -= n;
    b.pending = Math.max(0, b.pending - n);
  }

  private release(b: OpenBatch): void {
    this.busy--;
    if (b.slot && this.crypto.kind === 'workers') this.crypto.slots.release(b.slot);
  }

  /** Give back a batch that will not be sent. */
  discard(b: OpenBatch): void {
    this.release(b);
    if (!b.slot) {
      b.room.fill(0);
      this.owned.delete(b.room);
    }
  }

  /** Queue a filled batch (a whole number of crypto sectors): to the pool (workers), or as it is (here: crypted). */
  async submit(b: OpenBatch): Promise<void> {
    const length = b.filled;
    // Here, `pending` is filled % sectorSize, which the caller made 0 (cryptRun: a partial sector is trimmed or refused).
    if (length === 0) return this.discard(b);
    this.batches++;
    const c = this.crypto;
    if (c.kind === 'here') {
      this.entries.push({ kind: 'batch', batch: b, length, done: null, state: { settled: true } });
      await this.emitReady();
      return;
    }
    const state = { settled: false };
    const done = c.pool
      .crypt(c.job, this.encrypt, {
        buffer: b.slot!.buffer,
        offset: b.slot!.offset,
        length,
        firstTweak: b.tweak.firstTweak,
        sectorSize: this.sectorSize,
        tweakStep: b.tweak.tweakStep,
      })
      .then(() => undefined)
      .catch((e: unknown) => {
        this.failure ??= e;
      })
      .finally(() => {
        state.settled = true;
      });
    this.entries.push({ kind: 'batch', batch: b, length, done, state });
    await this.emitReady();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Emit the oldest entry, waiting for its batch if needed. */
  private async emitHead(): Promise<void> {
    const e = this.entries[0];
    if (!e) return;
    if (e.kind === 'batch' && e.done) await e.done;
    this.check();
    this.entries.shift();
    if (e.kind === 'bytes') {
      await this.out.write(e.bytes);
      return;
    }
    const b = e.batch;
    let chunk: Uint8Array;
    if (b.slot) {
      // The slot is reused: the reader gets its own copy, in memory that is not zeroed first (every byte is set
      // here; Buffer.from zero-fills a new buffer before copying into it).
      chunk = Buffer.allocUnsafeSlow(e.length);
      chunk.set(b.room.subarray(0, e.length));
    } else {
      // The batch's own buffer: the reader's from now on.
      this.owned.delete(b.room);
      chunk = b.room.subarray(0, e.length);
    }
    this.release(b);
    this.processed += BigInt(e.length);
    this.onBatch?.(e.length);
    await this.out.write(chunk);
  }

  /** Emit leading entries that need no waiting. */
  private async emitReady(): Promise<void> {
    this.check();
    for (let e = this.entries[0]; e && (e.kind === 'bytes' || e.state.settled); e = this.entries[0]) await this.emitHead();
  }

  /** Emit everything queued. */
  async drain(): Promise<void> {
    while (this.entries.length > 0) await this.emitHead();
    this.check();
  }

  /** Wait for batches still in a worker (before the slots are wiped). */
  async settle(): Promise<void> {
    await Promise.all(this.entries.map((e) => (e.kind === 'batch' ? e.done : undefined)));
  }

  /** Zero the batches of their own that never reached the reader (after settle). */
  wipe(): void {
    for (const room of this.owned) room.fill(0);
    this.owned.clear();
  }
}
