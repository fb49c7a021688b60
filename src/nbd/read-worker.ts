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

export type ReadWorkerReply = { readonly id: number; readonly ok: true } | { readonly id: number; readonly ok: false; readonly message: string };

let fd = -1;
let xts: Xts | null = null;

function handle(msg: ReadWorkerInit | ReadWorkerTask | { kind: 'close' }): ReadWorkerReply | null {
  if (msg.kind === 'init') {
    try {
      fd = openSync(msg.path, 'r');
      xts = createXts(msg.key, { backend: msg.backend });
    } finally {
      msg.key.fill(0);
    }
    return null;
  }
  if (msg.kind === 'close') {
    xts?.dispose();
    xts = null;
    if (fd >= 0) closeSync(fd);
    fd = -1;
    return null;
  }
  try {
    if (xts === null) throw new Error('read worker used before init');
    const view = new Uint8Array(msg.buffer, 0, msg.length);
    let done = 0;
    while (done < msg.length) {
      const n = readSync(fd, view, done, msg.length - done, msg.filePosition + done);
      if (n === 0) throw new Error(`container file ends before ${msg.filePosition + msg.length}`);
      done += n;
    }
    xts.decryptSectors(view, msg.firstTweak, msg.sectorSize, { tweakStep: msg.tweakStep });
    return { id: msg.id, ok: true };
  } catch (e) {
    return { id: msg.id, ok: false, message: (e as Error)?.message ?? String(e) };
  }
}

parentPort?.on('message', (msg: ReadWorkerInit | ReadWorkerTask | { kind: 'close' }) => {
  const reply = handle(msg);
  if (reply !== null) parentPort!.postMessage(reply);
  if (msg.kind === 'close') parentPort!.close();
});
