/**
 * Ordered output of a crypt stream: literal bytes (headers, BAT, bitmaps) and
 * batches of sectors that the worker pool encrypts or decrypts in shared
 * slots, several at once, emitted strictly in the order they were queued.
 * The slot ring bounds the memory in flight.
 */
import type { CryptJob, CryptPool } from '../pool/crypt-pool.js';
import type { SectorTweak } from '../../volume/index.js';
import type { Slot, SlotRing } from '../pool/slot-ring.js';
import type { StreamOutput } from './stream-duplex.js';

type Entry =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'batch'; readonly slot: Slot; readonly length: number; readonly done: Promise<void>; readonly state: { settled: boolean } };

/** A batch being filled by the parser before it goes to the pool. */
export interface OpenBatch {
  readonly slot: Slot;
  /** Bytes filled so far. */
  filled: number;
}

const ZERO_CHUNK = 1 << 20;

export class StreamCryptQueue {
  private readonly entries: Entry[] = [];
  /** Slots out of the ring (being filled, in a worker, or waiting to be emitted). */
  private busy = 0;
  private failure: unknown = null;
  /** Payload bytes put through AES-XTS. */
  processed = 0n;

  constructor(
    private readonly pool: CryptPool,
    private readonly job: CryptJob,
    private readonly encrypt: boolean,
    private readonly slots: SlotRing,
    private readonly out: StreamOutput,
    private readonly sectorSize: number,
    private readonly onBatch?: (bytes: number) => void,
  ) {}

  get batchBytes(): number {
    return this.slots.slotSize;
  }

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

  /** A free slot to fill with sectors, waiting for the oldest batch to be emitted when all are in use. */
  async open(): Promise<OpenBatch> {
    for (;;) {
      this.check();
      if (this.busy < this.slots.count) {
        this.busy++;
        // A slot is free, so acquire() resolves at once.
        return { slot: await this.slots.acquire(), filled: 0 };
      }
      await this.emitHead();
    }
  }

  private release(slot: Slot): void {
    this.busy--;
    this.slots.release(slot);
  }

  /** Give back a batch that will not be sent. */
  discard(b: OpenBatch): void {
    this.release(b.slot);
  }

  /** Send a filled batch (a whole number of crypto sectors) to the pool with the tweak of its first sector. */
  async submit(b: OpenBatch, tweak: SectorTweak): Promise<void> {
    const length = b.filled;
    if (length === 0) return this.discard(b);
    const state = { settled: false };
    const done = this.pool
      .crypt(this.job, this.encrypt, {
        buffer: b.slot.buffer,
        offset: b.slot.offset,
        length,
        firstTweak: tweak.firstTweak,
        sectorSize: this.sectorSize,
        tweakStep: tweak.tweakStep,
      })
      .then(() => undefined)
      .catch((e: unknown) => {
        this.failure ??= e;
      })
      .finally(() => {
        state.settled = true;
      });
    this.entries.push({ kind: 'batch', slot: b.slot, length, done, state });
    await this.emitReady();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Emit the oldest entry, waiting for its batch if needed. */
  private async emitHead(): Promise<void> {
    const e = this.entries[0];
    if (!e) return;
    if (e.kind === 'batch') await e.done;
    this.check();
    this.entries.shift();
    if (e.kind === 'bytes') {
      await this.out.write(e.bytes);
      return;
    }
    // The slot is reused: the reader gets its own copy, in memory that is not zeroed first (every byte is set here;
    // Buffer.from zero-fills a new buffer before copying into it).
    const copy = Buffer.allocUnsafeSlow(e.length);
    copy.set(e.slot.view(e.length));
    this.release(e.slot);
    this.processed += BigInt(e.length);
    this.onBatch?.(e.length);
    await this.out.write(copy);
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
}
