/**
 * The server's native read path (native/nbd_direct_read.cc): for a raw or
 * fixed-VHD container, one native thread per connection answers READs whole
 * (pread, decrypt, send) and carries every other reply of that connection,
 * so replies never interleave and the main thread only parses requests.
 * The thread finishes jobs in the order they were queued, so completions are
 * matched to promises first in, first out.
 */
import { openSync, closeSync } from 'node:fs';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { nativeReplies, type NativeDirectReadFile, type NativeReplySender } from './native-replies.js';
import { NbdRequestError } from './errors.js';
import { NBD_EIO } from './protocol.js';

/** A READ the reply thread can answer: the ciphertext's file position and its XTS tweaks. */
export interface DirectReadPlan {
  readonly filePosition: number;
  readonly firstTweak: bigint;
  readonly tweakStep: number;
  readonly sectorSize: number;
}

/** The container file and key schedule that every connection's reply thread reads with. */
export class DirectReadFile {
  private constructor(readonly native: NativeDirectReadFile) {}

  /** Open `path` for the native read path, or null where the addon has none (not Linux, addon missing). */
  static open(path: string, key: Uint8Array, kernel: string): DirectReadFile | null {
    const addon = nativeReplies();
    if (addon === undefined) return null;
    const fd = openSync(path, 'r');
    try {
      return new DirectReadFile(new addon.DirectReadFile(key, kernel, fd));
    } finally {
      closeSync(fd); // the native object holds its own duplicate
    }
  }

  dispose(): void {
    this.native.dispose();
  }
}

/**
 * Reply threads alive at once in this process (each holds 512 KiB of buffers); connections beyond it are
 * served on the main thread, so a flood of clients cannot spawn threads without bound.
 */
export const MAX_REPLY_THREADS = 64;
let liveThreads = 0;

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** Node keeps a socket's descriptor on its private handle; there is no public accessor. */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** One connection's reply thread. */
export class DirectReplies {
  private readonly waiting: Waiter[] = [];
  private ended: Error | null = null;
  private sender: NativeReplySender | null = null;

  private constructor(private readonly onFailure: (e: Error) => void) {}

  /**
   * Start the thread on `socket`, whose pending writes must be flushed; null when the socket has no descriptor,
   * and always null on a TLS connection: the thread writes plaintext to the descriptor with sendmsg, which
   * would bypass the TLS record layer (the client would get cleartext, or rather a broken TLS stream), so
   * TLS connections are answered on the main thread through the TLS socket.
   */
  static start(file: DirectReadFile, socket: Socket, onFailure: (e: Error) => void): DirectReplies | null {
    if (socket instanceof TLSSocket) return null;
    const addon = nativeReplies();
    const fd = socketFd(socket);
    if (addon === undefined || fd === undefined || liveThreads >= MAX_REPLY_THREADS) return null;
    const r = new DirectReplies(onFailure);
    r.sender = new addon.ReplySender(file.native, fd, (n, failure) => r.onDone(n, failure));
    liveThreads++;
    return r;
  }

  /** Answer a READ: `head` then the plaintext of `length` bytes; `onReadError` if the image cannot be read. */
  read(head: Uint8Array, onReadError: Uint8Array, plan: DirectReadPlan, length: number): Promise<void> {
    return this.queue((s) => s.read(head, onReadError, plan.filePosition, length, plan.firstTweak, plan.tweakStep, plan.sectorSize), true);
  }

  /** Send a whole reply made of `parts`; settles quietly once the connection has ended. */
  send(parts: readonly Uint8Array[]): Promise<void> {
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    return this.queue((s) => s.send(bytes), false);
  }

  /** Stop the thread; replies still queued are dropped (their requests fail). */
  close(): void {
    this.end(new NbdRequestError(NBD_EIO, 'the connection closed'));
  }

  private queue(enqueue: (s: NativeReplySender) => boolean, failLoudly: boolean): Promise<void> {
    const settleEnded = (): Promise<void> => (failLoudly ? Promise.reject(this.ended!) : Promise.resolve());
    if (this.ended !== null || this.sender === null) return settleEnded();
    return new Promise<void>((resolve, reject) => {
      if (!enqueue(this.sender!)) {
        if (failLoudly) reject(new NbdRequestError(NBD_EIO, 'the connection closed'));
        else resolve();
        return;
      }
      this.waiting.push({ resolve, reject: failLoudly ? reject : () => resolve() });
    });
  }

  private onDone(completed: number, failure: string | undefined): void {
    for (let i = 0; i < completed; i++) this.waiting.shift()?.resolve();
    if (failure !== undefined && this.ended === null) {
      const e = new NbdRequestError(NBD_EIO, failure);
      this.end(e);
      this.onFailure(e);
    }
  }

  private end(e: Error): void {
    if (this.ended !== null) return;
    this.ended = e;
    if (this.sender !== null) {
      this.sender.close();
      this.sender = null;
      liveThreads--;
    }
    for (const w of this.waiting.splice(0)) w.reject(e);
  }
}
