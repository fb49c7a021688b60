/**
 * Exact-length reads from a stream socket: `read(n)` resolves with exactly n
 * bytes or rejects when the peer goes away first. Buffers at most
 * `highWater` bytes beyond what is asked for, pausing the socket otherwise,
 * so a fast or hostile peer cannot make us hold unbounded memory.
 */
import type { Socket } from 'node:net';
import { NbdDisconnectedError, NbdProtocolError } from './errors.js';

export class ByteReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: Error | null = null;
  private want = 0;
  private waiter: { resolve: () => void; reject: (e: Error) => void } | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly highWater = 4 * 1024 * 1024,
  ) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered >= this.highWater && this.buffered >= this.want) this.socket.pause();
    this.wake();
  };

  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };

  private readonly onError = (e: Error): void => {
    this.failure = e;
    this.wake();
  };

  /**
   * Stop reading `socket` (another reader takes it over, e.g. TLS after STARTTLS). Throws when bytes are
   * buffered that nobody asked for yet: whatever a peer sent ahead of an upgrade must not be read as if
   * it had come through it.
   */
  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
    if (this.buffered !== 0) throw new NbdProtocolError(`${this.buffered} bytes arrived before the TLS handshake`);
  }

  /** Bytes received but not yet consumed. */
  get available(): number {
    return this.buffered;
  }

  /** Resolve with the next `n` bytes (a fresh Buffer the caller owns). */
  async read(n: number): Promise<Buffer> {
    if (this.waiter !== null) throw new Error('ByteReader: concurrent reads');
    while (this.buffered < n) {
      if (this.failure !== null) throw new NbdDisconnectedError(`NBD connection failed: ${this.failure.message}`, { cause: this.failure });
      if (this.ended) throw new NbdDisconnectedError();
      this.want = n;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve, reject) => {
        this.waiter = { resolve, reject };
      });
    }
    this.want = 0;
    return this.take(n);
  }

  /** Read and drop `n` bytes without holding them all at once. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const step = Math.min(left, 1024 * 1024);
      await this.read(step);
      left -= step;
    }
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      // The common case: the whole message is inside one chunk.
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const step = Math.min(c.length, n - at);
        c.copy(out, at, 0, step);
        at += step;
        if (step === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(step);
      }
    }
    this.buffered -= n;
    if (this.buffered < this.highWater && this.socket.isPaused() && !this.ended) this.socket.resume();
    return out;
  }

  private wake(): void {
    const w = this.waiter;
    if (w === null) return;
    if (this.buffered >= this.want || this.ended || this.failure !== null) {
      this.waiter = null;
      w.resolve();
    }
  }
}
