/**
 * The writable side of a crypt stream as a pull reader: the stream's parser
 * asks for exact byte counts (headers) or for whatever is buffered (payload),
 * and the writer is held back (its callback deferred) while more than a small
 * amount is queued, so memory stays bounded whatever the input size.
 */
import type { VhdStreamFaults, VhdStreamInput } from '../../image/index.js';
import { EngineError } from '../errors.js';

/** The engine's codes for what the VHD stream reader finds wrong in a crypt stream's input. */
const STREAM_FAULTS: VhdStreamFaults = Object.freeze({
  badInput: (message: string, cause?: unknown) => new EngineError('ENGINE_STREAM_BAD_INPUT', message, cause === undefined ? undefined : { cause }),
  outOfOrder: (message: string) => new EngineError('ENGINE_STREAM_ORDER', message),
  badArgument: (message: string) => new EngineError('ENGINE_BAD_ARGUMENT', message),
  unsupported: (message: string) => new EngineError('ENGINE_UNSUPPORTED_FORMAT', message),
});

/** Queued bytes above which a writer's callback waits for the parser. */
const QUEUE_LIMIT = 1 << 20;

export class StreamInput implements VhdStreamInput {
  private readonly chunks: Uint8Array[] = [];
  private queued = 0;
  private ended = false;
  private failure: unknown = null;
  private wake: (() => void) | null = null;
  private heldCallback: (() => void) | null = null;
  /** Bytes of the input consumed so far (the file offset of the next byte). */
  position = 0n;
  /** How the stream reader reports a bad input: as the engine's stream errors. */
  readonly faults = STREAM_FAULTS;

  /** From Duplex._write: queue a chunk; `done` runs when the queue has room again. */
  push(chunk: Uint8Array, done: () => void): void {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.queued += chunk.length;
    }
    if (this.queued < QUEUE_LIMIT) done();
    else this.heldCallback = done;
    this.notify();
  }

  /** From Duplex._final: no more chunks. */
  end(): void {
    this.ended = true;
    this.notify();
  }

  /** Wake a waiting parser with an error (destroy, abort). */
  fail(e: unknown): void {
    this.failure ??= e;
    this.chunks.length = 0;
    this.queued = 0;
    this.releaseWriter();
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private releaseWriter(): void {
    const cb = this.heldCallback;
    this.heldCallback = null;
    cb?.();
  }

  /** Wait until more than `n` bytes are queued or the input has ended. */
  private async fill(n: number): Promise<void> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.queued > n || this.ended) return;
      // The parser needs more than is queued: let the writer go on.
      this.releaseWriter();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private take(n: number): Uint8Array {
    const head = this.chunks[0]!;
    let out: Uint8Array;
    if (head.length <= n) {
      this.chunks.shift();
      out = head;
    } else {
      out = head.subarray(0, n);
      this.chunks[0] = head.subarray(n);
    }
    this.queued -= out.length;
    this.position += BigInt(out.length);
    if (this.queued < QUEUE_LIMIT) this.releaseWriter();
    return out;
  }

  /** Put bytes just read back in front (a parser that looked ahead). */
  unread(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.chunks.unshift(bytes);
    this.queued += bytes.length;
    this.position -= BigInt(bytes.length);
  }

  /** Up to `max` bytes (at least one), keeping the last `keep` bytes of the input unread; null when only those remain. */
  async readSome(max: number, keep = 0): Promise<Uint8Array | null> {
    await this.fill(keep);
    const avail = this.queued - keep;
    if (avail <= 0) return null;
    return this.take(Math.min(max, avail, this.chunks[0]!.length));
  }

  /** Up to `max` bytes (at least one) of data that must be there: a typed error naming `what` at the end of the input. */
  async readRequired(max: number, what: string): Promise<Uint8Array> {
    const piece = await this.readSome(max);
    if (!piece) throw truncated(what, max, 0, this.position);
    return piece;
  }

  /**
   * Exactly `n` bytes (a copy when they span chunks, else a view of the writer's chunk unless `own`: then always
   * memory of their own, copied once); a typed error naming `what` when the input ends first.
   */
  async readExactly(n: number, what: string, own = false): Promise<Uint8Array> {
    if (n === 0) return new Uint8Array(0);
    await this.fill(n - 1);
    if (this.queued < n) throw truncated(what, n, this.queued, this.position);
    if (this.chunks[0]!.length >= n) return own ? Uint8Array.from(this.take(n)) : this.take(n);
    const out = new Uint8Array(n);
    for (let o = 0; o < n; ) {
      const piece = this.take(n - o);
      out.set(piece, o);
      o += piece.length;
    }
    return out;
  }

  /** Skip `n` bytes; a typed error when the input ends first. */
  async skip(n: bigint, what: string): Promise<void> {
    let left = n;
    while (left > 0n) {
      const piece = await this.readSome(left > 1n << 30n ? 1 << 30 : Number(left));
      if (!piece) throw truncated(what, Number(left), 0, this.position);
      left -= BigInt(piece.length);
    }
  }

  /** Everything up to the end, keeping only the last `keep` bytes (what lies before them is discarded); returns those. */
  async tail(keep: number, what: string): Promise<{ bytes: Uint8Array; skipped: bigint }> {
    let skipped = 0n;
    for (;;) {
      const piece = await this.readSome(1 << 30, keep);
      if (!piece) break;
      skipped += BigInt(piece.length);
    }
    return { bytes: await this.readExactly(keep, what), skipped };
  }
}

function truncated(what: string, need: number, have: number, at: bigint): EngineError {
  return new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream ended early: ${what} needs ${need} bytes at offset ${at}, only ${have} remain (truncated image?)`);
}
