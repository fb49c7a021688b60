/**
 * Worker thread of the server's read path: reads ciphertext straight from the
 * container file (raw or fixed VHD, where virtual offset = file offset) into
 * a shared buffer and decrypts it there, so the main thread only moves bytes
 * to sockets. The key arrives once, in the init message, and is wiped here
 * after the key schedule is built.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { createXts, type BackendChoice, type Xts } from '../crypto/index.js';

export interface ReadWorkerInit {
  readonly kind: 'init';
  readonly path: string;
  readonly key: Uint8Array;
  readonly backend: BackendChoice;
}

export interface ReadWorkerTask {
  readonly kind: 'read';
  readonly id: number;
  readonly buffer: SharedArrayBuffer;
  readonly length: number;
  readonly filePosition: number;
  readonly firstTweak: bigint;
  readonly tweakStep: number;
  readonly sectorSize: number;
}

/** The reads queued while the main thread handled one batch of socket input, sent as one message. */
export interface ReadWorkerBatch {
  readonly kind: 'reads';
  readonly tasks: readonly ReadWorkerTask[];
}

export type ReadWorkerReply = { readonly id: number; readonly ok: true } | { readonly id: number; readonly ok: false; readonly message: string };

type ReadWorkerMessage = ReadWorkerInit | ReadWorkerBatch | { kind: 'close' };

let fd = -1;
let xts: Xts | null = null;
/** Ciphertext staging: small enough to stay in a core's L2. */
const SCRATCH_BYTES = 128 * 1024;
const scratch = new Uint8Array(SCRATCH_BYTES);

function control(msg: ReadWorkerInit | { kind: 'close' }): void {
  if (msg.kind === 'init') {
    try {
      fd = openSync(msg.path, 'r');
      xts = createXts(msg.key, { backend: msg.backend });
    } finally {
      msg.key.fill(0);
    }
    return;
  }
  xts?.dispose();
  xts = null;
  if (fd >= 0) closeSync(fd);
  fd = -1;
}

function read(msg: ReadWorkerTask): ReadWorkerReply {
  try {
    if (xts === null) throw new Error('read worker used before init');
    const view = new Uint8Array(msg.buffer, 0, msg.length);
    // Ciphertext lands in a small reused buffer that stays in cache; the decrypt
    // pass then writes the reply buffer once (reading straight into the reply
    // buffer and decrypting in place touched that cold memory twice).
    const step = Math.floor(SCRATCH_BYTES / msg.sectorSize) * msg.sectorSize;
    for (let at = 0; at < msg.length; at += step) {
      const len = Math.min(step, msg.length - at);
      const chunk = scratch.subarray(0, len);
      let done = 0;
      while (done < len) {
        const n = readSync(fd, chunk, done, len - done, msg.filePosition + at + done);
        if (n === 0) throw new Error(`container file ends before ${msg.filePosition + msg.length}`);
        done += n;
      }
      const firstTweak = msg.firstTweak + BigInt(at / msg.sectorSize) * BigInt(msg.tweakStep);
      xts.decryptSectors(chunk, firstTweak, msg.sectorSize, { tweakStep: msg.tweakStep, out: view.subarray(at, at + len) });
    }
    return { id: msg.id, ok: true };
  } catch (e) {
    return { id: msg.id, ok: false, message: (e as Error)?.message ?? String(e) };
  }
}

parentPort?.on('message', (msg: ReadWorkerMessage) => {
  if (msg.kind === 'reads') {
    // One reply message per batch: a message each way per request cost the main thread more than the reads.
    parentPort!.postMessage(msg.tasks.map(read));
    return;
  }
  control(msg);
  if (msg.kind === 'close') parentPort!.close();
});
