/**
 * A small pool of read-and-decrypt worker threads (read-worker.ts) for the
 * encrypted backing's hot path: whole, allocated, sector-aligned reads of a
 * raw or fixed-VHD container. Each request's buffer is a pooled
 * SharedArrayBuffer the worker fills in place; nothing is copied between
 * threads. Used only when the compiled worker exists (dist/); otherwise the
 * backing reads and decrypts on the main thread.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { compiledModulePath } from '../package-root.js';
import { Worker } from 'node:worker_threads';
import type { BackendChoice } from '../crypto/index.js';
import { acquireSharedBuffer } from './buffer-pool.js';
import { NbdRequestError } from './errors.js';
import { NBD_EIO } from './protocol.js';
import type { ReadWorkerBatch, ReadWorkerInit, ReadWorkerReply, ReadWorkerTask } from './read-worker.js';

/** Reads per worker message: enough to save most messages, few enough that replies start flowing early. */
const TASKS_PER_MESSAGE = 8;

export interface DecryptReader {
  /** Read `length` bytes of ciphertext at `filePosition` and decrypt them (a whole number of sectors). */
  read(filePosition: bigint, length: number, firstTweak: bigint, tweakStep: number, sectorSize: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Start `threads` workers over the container file, or return null when the compiled worker is not available. */
export function startDecryptReaders(path: string, key: Uint8Array, opts: { threads?: number; backend?: BackendChoice } = {}): DecryptReader | null {
  const workerFile = compiledModulePath('nbd', 'read-worker.js');
  if (workerFile === undefined || !existsSync(workerFile)) return null;
  // One core stays with the main thread, which parses requests and feeds the sockets (measured: on 2 cores one reader beats two).
  const threads = opts.threads ?? Math.min(4, Math.max(1, cpus().length - 1));
  const workers: Worker[] = [];
  const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let turn = 0;
  let failure: Error | null = null;
  const onReply = (replies: readonly ReadWorkerReply[]): void => {
    for (const r of replies) {
      const p = pending.get(r.id);
      if (p === undefined) continue;
      pending.delete(r.id);
      if (r.ok) p.resolve();
      else p.reject(new NbdRequestError(NBD_EIO, `read failed: ${r.message}`));
    }
  };
  // Reads queued during one turn of the event loop go to the workers together
  // (setImmediate runs after this turn's socket input is parsed), a few per message.
  const queues: ReadWorkerTask[][] = [];
  let flushScheduled = false;
  const flush = (): void => {
    flushScheduled = false;
    for (let i = 0; i < workers.length; i++) {
      const q = queues[i]!;
      for (let at = 0; at < q.length; at += TASKS_PER_MESSAGE) {
        const batch: ReadWorkerBatch = { kind: 'reads', tasks: q.slice(at, at + TASKS_PER_MESSAGE) };
        workers[i]!.postMessage(batch);
      }
      q.length = 0;
    }
  };
  const onError = (e: Error): void => {
    failure = e;
    for (const p of pending.values()) p.reject(new NbdRequestError(NBD_EIO, `read worker failed: ${e.message}`));
    pending.clear();
  };
  for (let i = 0; i < threads; i++) {
    const w = new Worker(workerFile);
    w.on('message', onReply);
    w.on('error', onError);
    w.unref();
    // Each worker gets its own copy of the key (structured clone); ours is wiped by the caller.
    const init: ReadWorkerInit = { kind: 'init', path, key: Uint8Array.from(key), backend: opts.backend ?? 'auto' };
    w.postMessage(init, [init.key.buffer as ArrayBuffer]);
    workers.push(w);
    queues.push([]);
  }
  return {
    read(filePosition, length, firstTweak, tweakStep, sectorSize) {
      if (failure !== null) return Promise.reject(new NbdRequestError(NBD_EIO, `read worker failed: ${failure.message}`));
      const view = acquireSharedBuffer(length);
      const id = nextId++;
      const task: ReadWorkerTask = {
        kind: 'read',
        id,
        buffer: view.buffer as SharedArrayBuffer,
        length,
        filePosition: Number(filePosition),
        firstTweak,
        tweakStep,
        sectorSize,
      };
      return new Promise<Uint8Array>((resolve, reject) => {
        pending.set(id, { resolve: () => resolve(view), reject });
        queues[turn++ % workers.length]!.push(task);
        if (!flushScheduled) {
          flushScheduled = true;
          setImmediate(flush);
        }
      });
    },
    async close() {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              w.once('exit', () => resolve());
              w.postMessage({ kind: 'close' });
              setTimeout(() => void w.terminate(), 5000).unref();
            }),
        ),
      );
    },
  };
}
