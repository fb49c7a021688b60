/**
 * The Duplex behind createEncryptStream/createDecryptStream: written chunks
 * feed a StreamInput that one async job parses; the job's output is pushed
 * with backpressure (it waits for _read when the readable side is full).
 * Abort, destroy and errors end the job and run its cleanup exactly once.
 */
import { Duplex } from 'node:stream';
import { readStreamSource, type StreamInputFormat, type StreamSource } from '../../image/vhd-stream-reader.js';
import { checkBatchBytes } from '../../volume/index.js';
import { abortedError } from '../pool/sector-pipeline.js';
import { StreamInput } from './stream-input.js';

/** Where a job's bytes go: resolves when the reader can take more. */
export interface StreamOutput {
  write(bytes: Uint8Array): Promise<void>;
  /** Bytes pushed so far. */
  readonly written: bigint;
}

export interface CryptStreamOptions {
  /** What the stream carries: a VHD, fixed or dynamic (default), or a raw disk. */
  readonly inputFormat?: StreamInputFormat;
  /** Raw and fixed VHD streams: the disk's virtual size, when known (checked at the end; an encrypt stream also
   *  chooses its LUKS2 sector size by it, as encryptImage does). */
  readonly sourceSize?: bigint;
  /** Bytes per batch, a multiple of 4096: through the worker pool (default 4 MiB), or on the calling thread with the
   *  native kernel and no thread count (default 128 KiB; each batch is a chunk of the readable side). */
  readonly batchBytes?: number;
  readonly signal?: AbortSignal;
  /** Readable-side buffer in bytes (default 4 MiB); the writable side defaults to 1 MiB. */
  readonly readableHighWaterMark?: number;
  readonly writableHighWaterMark?: number;
}

export abstract class CryptStreamBase<R, O extends CryptStreamOptions = CryptStreamOptions> extends Duplex {
  /** What the run did; set once the readable side has ended. */
  result: R | null = null;
  protected readonly input = new StreamInput();
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort: () => void;
  private started = false;
  private readWaiter: (() => void) | null = null;
  private written = 0n;
  private finalCallback: ((e?: Error | null) => void) | null = null;
  private jobDone = false;

  constructor(protected readonly opts: O) {
    checkBatchBytes(opts.batchBytes);
    super({
      readableHighWaterMark: opts.readableHighWaterMark ?? 4 << 20,
      writableHighWaterMark: opts.writableHighWaterMark ?? 1 << 20,
      allowHalfOpen: true,
    });
    this.signal = opts.signal;
    this.onAbort = () => this.destroy(abortedError(this.signal));
    if (this.signal?.aborted) {
      queueMicrotask(this.onAbort);
    } else {
      this.signal?.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  /** The input's container, as its first bytes declare it (a dynamic VHD's header and BAT are read here). */
  protected readSource(): Promise<StreamSource> {
    return readStreamSource(this.input, this.opts.inputFormat ?? 'vhd', this.opts.sourceSize);
  }

  /** The job: parse this.input, write the output; its cleanup belongs in a finally. */
  protected abstract run(out: StreamOutput): Promise<R>;

  private start(): void {
    if (this.started || this.destroyed) return;
    this.started = true;
    const self = this;
    const out: StreamOutput = {
      async write(bytes) {
        if (self.destroyed) throw abortedError(self.signal);
        self.written += BigInt(bytes.length);
        if (!self.push(bytes)) {
          await new Promise<void>((resolve) => {
            self.readWaiter = resolve;
          });
          if (self.destroyed) throw abortedError(self.signal);
        }
      },
      get written() {
        return self.written;
      },
    };
    this.run(out).then(
      (r) => {
        this.jobDone = true;
        if (this.destroyed) return;
        this.result = r;
        this.push(null);
        const cb = this.finalCallback;
        this.finalCallback = null;
        cb?.();
      },
      (e: unknown) => {
        this.jobDone = true;
        if (!this.destroyed) this.destroy(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.start();
    this.input.push(chunk, () => cb());
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.start();
    this.input.end();
    // 'finish' waits for the job, so a caller awaiting the writable side sees its errors.
    if (this.jobDone) cb();
    else this.finalCallback = cb;
  }

  override _read(): void {
    this.start();
    const w = this.readWaiter;
    this.readWaiter = null;
    w?.();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.input.fail(err ?? abortedError(this.signal));
    const w = this.readWaiter;
    this.readWaiter = null;
    w?.();
    cb(err);
  }
}
