/**
 * A piscina pool of XTS worker threads. A job's key is copied once into a small
 * SharedArrayBuffer that every task references (never cloned into a message);
 * endJob wipes it and has every worker dispose its key schedule.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { randomUUID } from 'node:crypto';
import { Piscina } from 'piscina';
import type { BackendChoice } from '../../crypto/index.js';
import { VhdcryptError } from '../../errors.js';
import { EngineError } from '../errors.js';
import { builtPath, compiledModulePath } from '../../package-root.js';
import type { CryptTask, DisposeTask, SectorBatchRef, WarmTask, WorkerReply } from './worker-messages.js';

export type { SectorBatchRef } from './worker-messages.js';

/** The compiled worker: its bundle (dist/worker, rolldown.config.mjs) when built, else tsc's output; tests and the CLI need `npm run build`. */
export function workerPath(): string {
  const bundle = builtPath('worker', 'xts-worker.js');
  const file = compiledModulePath('engine', 'pool', 'xts-worker.js');
  if (bundle === undefined || file === undefined) throw new EngineError('ENGINE_WORKER_FAILED', 'cannot find the vhdcrypt package root to locate the XTS worker');
  return existsSync(bundle) ? bundle : file;
}

export function defaultThreads(): number {
  return Math.max(1, cpus().length);
}

export interface CryptJob {
  readonly id: string;
  readonly key: SharedArrayBuffer;
  readonly keyLength: number;
}

/** How long destroy() waits for workers still starting. */
const WARM_WAIT_MS = 10_000;

/** An error a worker reported, with its original code (XTS_..., ENGINE_...). */
class WorkerCryptError extends VhdcryptError {}

export class CryptPool {
  readonly threads: number;
  readonly backend: BackendChoice;
  private readonly pool: Piscina;
  private closed = false;
  /** Settles once every worker has loaded and started its backend (see warm). */
  private warming: Promise<void> | null = null;
  /** What really ran, from the first reply. */
  ran: { backend: string; kernel: string } | null = null;

  constructor(opts: { threads?: number; backend?: BackendChoice } = {}) {
    const threads = opts.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new EngineError('ENGINE_BAD_ARGUMENT', `threads expected an integer from 1 to 256, got ${String(threads)}`);
    }
    const filename = workerPath();
    if (!existsSync(filename)) {
      throw new EngineError('ENGINE_WORKER_FAILED', `worker ${filename} is missing; build the package first (npm run build)`);
    }
    this.threads = threads;
    this.backend = opts.backend ?? 'auto';
    this.pool = new Piscina({ filename, minThreads: threads, maxThreads: threads, idleTimeout: 60_000, concurrentTasksPerWorker: 1 });
    // Piscina emits a worker that failed to start (EMFILE, ENOMEM: ERR_WORKER_INIT_FAILED) on the pool; with no
    // listener that is an uncaught exception. The tasks given to such a worker fail with the same error.
    this.pool.on('error', () => undefined);
  }

  /** Start every worker's backend now (no key involved), so the first batch does not wait for it. */
  warm(): Promise<void> {
    if (this.warming !== null) return this.warming;
    const task: WarmTask = { kind: 'warm', backend: this.backend };
    const all = Promise.all(Array.from({ length: this.threads }, () => this.pool.run(task) as Promise<WorkerReply>)).then((replies) => {
      for (const r of replies) if (!r.ok) throw new WorkerCryptError(r.code, r.message);
    });
    // A failure here is reported again by the first real batch; keep it from being unhandled meanwhile.
    all.catch(() => undefined);
    this.warming = all;
    return all;
  }

  /** Share a copy of the key with the workers; the caller may wipe its own copy afterwards. */
  startJob(key: Uint8Array): CryptJob {
    const sab = new SharedArrayBuffer(key.length);
    new Uint8Array(sab).set(key);
    return { id: randomUUID(), key: sab, keyLength: key.length };
  }

  async crypt(job: CryptJob, encrypt: boolean, b: SectorBatchRef): Promise<void> {
    const task: CryptTask = {
      kind: 'crypt',
      jobId: job.id,
      key: job.key,
      keyLength: job.keyLength,
      backend: this.backend,
      encrypt,
      buffer: b.buffer,
      offset: b.offset,
      length: b.length,
      firstTweak: b.firstTweak,
      sectorSize: b.sectorSize,
      tweakStep: b.tweakStep,
    };
    const reply = (await this.pool.run(task)) as WorkerReply;
    if (!reply.ok) throw new WorkerCryptError(reply.code, reply.message);
    if (!this.ran) this.ran = { backend: reply.backend, kernel: reply.kernel };
  }

  /** Wipe the shared key and make every worker drop its key schedule. */
  async endJob(job: CryptJob): Promise<void> {
    new Uint8Array(job.key).fill(0);
    if (this.closed) return;
    const barrier = new SharedArrayBuffer(4);
    const task: DisposeTask = { kind: 'dispose', jobId: job.id, barrier, parties: this.threads };
    await Promise.all(Array.from({ length: this.threads }, () => this.pool.run(task)));
  }

  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Workers are not terminated while still loading their modules: Node 20 can abort the whole process
    // then (FATAL ERROR "v8::Module::IsGraphAsync must be used on an instantiated module"), which a job that
    // fails fast (a wrong passphrase) used to hit now and then. Bounded, in case a worker never comes up.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.warm().catch(() => undefined), new Promise((r) => (timer = setTimeout(r, WARM_WAIT_MS)))]);
    clearTimeout(timer);
    await this.pool.destroy();
  }
}
