/**
 * A piscina pool of XTS worker threads. A job's key (and its block tag key, when
 * it tags its output) is copied once into a small SharedArrayBuffer that every
 * task references (never cloned into a message); endJob wipes it and has every
 * worker dispose its key schedule.
 * A small job runs its batches on the calling thread instead (`inline`): starting
 * a worker costs more than such a job's crypto and I/O (performance.md). With the
 * native kernel the calling thread is also one of the pool's threads: N threads
 * are N - 1 workers and this thread, which takes a batch whenever it has none
 * (a worker costs ~60 ms of CPU to start on these VMs, more than a GiB's crypto).
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Piscina } from 'piscina';
import { nativeKernels, type BackendChoice } from '../../crypto/index.js';
import { VhdcryptError } from '../../errors.js';
import { EngineError } from '../errors.js';
import { builtPath, compiledModulePath, requirePackage } from '../../package-root.js';
import type { FileReadPlan, FileWritePlan, FileWriteReport } from '../../image/index.js';
import type { CryptTask, DisposeTask, SectorBatchRef, WarmTask, WorkerReply, WorkerTask } from './worker-messages.js';
import runOnThisThread from './xts-worker.js';

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
  /** The shared copy of the block tag key (block-tag.ts), or null. */
  readonly tagKey: SharedArrayBuffer | null;
}

/**
 * Jobs with at most this many payload bytes run inline when no thread count is asked for: the native kernel and
 * the positional I/O get through it in a few tens of milliseconds on one core, about what starting workers takes.
 */
export const INLINE_MAX_BYTES = 64 << 20;

/** The batch size of a job that runs inline because it is small, unless the caller chose one. */
const SMALL_JOB_BATCH_BYTES = 2 << 20;

/**
 * The batch size for a job of `payloadBytes`: the caller's (already checked) when given; else a small job's batches
 * are 2 MiB (a whole manifest block), so the one slot it runs through is 2 MiB of fresh pages instead of 4, and
 * larger jobs keep `defaultBytes`. The same source always gives the same size, as a resumed run's journal requires.
 */
export function batchBytesForJob(asked: number | undefined, defaultBytes: number, payloadBytes: bigint): number {
  if (asked !== undefined) return asked;
  return payloadBytes <= BigInt(INLINE_MAX_BYTES) ? Math.min(defaultBytes, SMALL_JOB_BATCH_BYTES) : defaultBytes;
}

/**
 * The pool for a job of `payloadBytes`, inline where the native kernel runs it and either the caller asked for one
 * thread (a worker would add a thread to start and a hand-off per batch, and keep this thread busy beside it: a
 * `--threads 1` job is then one core's work, which is what a fleet running one job per core counts on) or left the
 * count open for a small job. WASM and JS are slow enough that even a small job is worth a worker per core.
 */
export function poolForJob(opts: { threads?: number; backend?: BackendChoice }, payloadBytes: bigint): CryptPool {
  const inline = nativeChosen(opts.backend) && (opts.threads === 1 || (opts.threads === undefined && payloadBytes <= BigInt(INLINE_MAX_BYTES)));
  return new CryptPool({ ...opts, inline });
}

/**
 * piscina, loaded on the first pool that has workers: an inline job (most small ones, and every --threads 1 native
 * job) then never loads its twenty modules.
 */
let piscinaClass: typeof Piscina | null = null;
function loadPiscina(): typeof Piscina {
  piscinaClass ??= requirePackage<{ Piscina: typeof Piscina }>(import.meta.url, 'piscina').Piscina;
  return piscinaClass;
}

/** True when `backend` runs the native kernel on this machine (the backend fast enough to run on the calling thread). */
export function nativeChosen(backend: BackendChoice = 'auto'): boolean {
  return (backend === 'native' || backend === 'auto') && nativeKernels().length > 0;
}

/** How long destroy() waits for workers still starting. */
const WARM_WAIT_MS = 10_000;

/** An error a worker reported, with its original code (XTS_..., ENGINE_...). */
class WorkerCryptError extends VhdcryptError {}

/** The error of a failed reply: a system call's errno error rebuilt as Node shapes it (code, syscall), else ours. */
function replyError(r: Extract<WorkerReply, { ok: false }>): Error {
  if (r.errno !== undefined) return Object.assign(new Error(r.message), { code: r.errno, syscall: r.side === 'write' ? 'write' : 'read' });
  return new WorkerCryptError(r.code, r.message);
}

/** Where a batch's I/O happens when the worker does it, and whether it tags the result. */
export interface BatchIo {
  readonly read: FileReadPlan | null;
  readonly write: FileWritePlan | null;
  /** Tag the result in pieces of `pieceBytes`, the first being block `firstIndex`, under the job's tag key (worker-messages.ts). */
  readonly tagPieces?: { readonly pieceBytes: number; readonly firstIndex: number; readonly bitmapBytes: number };
}

/** What a batch's worker reports beyond success. */
export interface BatchReport {
  readonly wrote?: FileWriteReport;
  readonly tags?: readonly string[];
}

/** A failed planned read or write of a batch, as the worker saw it. */
export class BatchIoError extends Error {
  constructor(
    readonly side: 'read' | 'write',
    cause: Error,
  ) {
    super(cause.message, { cause });
  }
}

export class CryptPool {
  readonly threads: number;
  readonly backend: BackendChoice;
  /** The piscina pool, or null when batches run on this thread. */
  private readonly pool: Piscina | null;
  /** Worker threads in the pool: `threads`, or one fewer when this thread takes batches too. */
  private readonly workers: number;
  /** This thread takes batches beside the workers (native kernel); `hereBusy` while it has one. */
  private readonly here: boolean;
  private hereBusy = false;
  private closed = false;
  private destroying: Promise<void> | null = null;
  /** Settles once every worker has loaded and started its backend (see warm). */
  private warming: Promise<void> | null = null;
  /** What really ran, from the first reply. */
  ran: { backend: string; kernel: string } | null = null;

  constructor(opts: { threads?: number; backend?: BackendChoice; inline?: boolean } = {}) {
    const threads = opts.inline === true ? 1 : (opts.threads ?? defaultThreads());
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
      throw new EngineError('ENGINE_BAD_ARGUMENT', `threads expected an integer from 1 to 256, got ${String(threads)}`);
    }
    this.threads = threads;
    this.backend = opts.backend ?? 'auto';
    if (opts.inline === true) {
      this.pool = null;
      this.workers = 0;
      this.here = true;
      return;
    }
    this.here = threads > 1 && nativeChosen(this.backend);
    this.workers = this.here ? threads - 1 : threads;
    const filename = workerPath();
    if (!existsSync(filename)) {
      throw new EngineError('ENGINE_WORKER_FAILED', `worker ${filename} is missing; build the package first (npm run build)`);
    }
    // Two tasks per worker when this thread takes batches too: a worker then has its next batch while this thread
    // is busy with one of its own and cannot hand it one.
    const perWorker = this.here ? 2 : 1;
    this.pool = new (loadPiscina())({ filename, minThreads: this.workers, maxThreads: this.workers, idleTimeout: 60_000, concurrentTasksPerWorker: perWorker });
    // Piscina emits a worker that failed to start (EMFILE, ENOMEM: ERR_WORKER_INIT_FAILED) on the pool; with no
    // listener that is an uncaught exception. The tasks given to such a worker fail with the same error.
    this.pool.on('error', () => undefined);
  }

  /** True when batches run on worker threads (false: inline, on the calling thread). */
  get usesWorkers(): boolean {
    return this.pool !== null;
  }

  /** One task on this thread (a turn of the event loop first, so signals, timers and progress run between batches). */
  private runHere(task: WorkerTask): Promise<WorkerReply> {
    return new Promise((resolve) => setImmediate(() => resolve(runOnThisThread(task))));
  }

  /** One task on a worker, or on this thread when inline, or when it takes batches too and has none (the same function). */
  private run(task: WorkerTask): Promise<WorkerReply> {
    if (this.pool === null) return this.runHere(task);
    if (this.here && task.kind === 'crypt' && !this.hereBusy) {
      this.hereBusy = true;
      return this.runHere(task).finally(() => {
        this.hereBusy = false;
      });
    }
    return this.pool.run(task) as Promise<WorkerReply>;
  }

  /** Start every worker's backend now (no key involved), so the first batch does not wait for it. */
  warm(): Promise<void> {
    if (this.warming !== null) return this.warming;
    if (this.pool === null) return (this.warming = Promise.resolve());
    const task: WarmTask = { kind: 'warm', backend: this.backend };
    const all = Promise.all(Array.from({ length: this.workers }, () => this.run(task))).then((replies) => {
      for (const r of replies) if (!r.ok) throw new WorkerCryptError(r.code, r.message);
    });
    // A failure here is reported again by the first real batch; keep it from being unhandled meanwhile.
    all.catch(() => undefined);
    this.warming = all;
    return all;
  }

  /** Share a copy of the key (and of the block tag key) with the workers; the caller may wipe its own afterwards. */
  startJob(key: Uint8Array, tagKey?: Uint8Array): CryptJob {
    const sab = new SharedArrayBuffer(key.length);
    new Uint8Array(sab).set(key);
    let tags: SharedArrayBuffer | null = null;
    if (tagKey !== undefined) {
      tags = new SharedArrayBuffer(tagKey.length);
      new Uint8Array(tags).set(tagKey);
    }
    return { id: randomUUID(), key: sab, keyLength: key.length, tagKey: tags };
  }

  /**
   * Encrypt or decrypt a batch in its slot; with `io`, the worker first reads it in and then writes it out itself
   * (a failed read or write rejects with BatchIoError). Resolves with the planned write's report and the tags.
   */
  async crypt(job: CryptJob, encrypt: boolean, b: SectorBatchRef, io: BatchIo = { read: null, write: null }): Promise<BatchReport> {
    if (io.tagPieces !== undefined && job.tagKey === null) throw new EngineError('ENGINE_BAD_ARGUMENT', 'tagPieces: the job was started without a block tag key');
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
      read: io.read,
      write: io.write,
      tagPieces: io.tagPieces ?? null,
      tagKey: io.tagPieces !== undefined ? job.tagKey : null,
    };
    const reply = await this.run(task);
    if (!reply.ok) {
      const e = replyError(reply);
      throw reply.side !== undefined ? new BatchIoError(reply.side, e) : e;
    }
    if (!this.ran) this.ran = { backend: reply.backend, kernel: reply.kernel };
    return { ...(reply.wrote ? { wrote: reply.wrote } : {}), ...(reply.tags ? { tags: reply.tags } : {}) };
  }

  /** Wipe the shared keys and make every worker drop its key schedule. */
  async endJob(job: CryptJob): Promise<void> {
    new Uint8Array(job.key).fill(0);
    if (job.tagKey !== null) new Uint8Array(job.tagKey).fill(0);
    // This thread's key schedule (inline, or beside the workers) goes at once; every worker takes one dispose task.
    if (this.here) runOnThisThread({ kind: 'dispose', jobId: job.id, barrier: new SharedArrayBuffer(4), parties: 1 });
    if (this.closed || this.pool === null) return;
    const barrier = new SharedArrayBuffer(4);
    const task: DisposeTask = { kind: 'dispose', jobId: job.id, barrier, parties: this.workers };
    await Promise.all(Array.from({ length: this.workers }, () => this.run(task)));
  }

  /** Stop the workers; every call returns the same promise, so a later one waits for an earlier one's work. */
  destroy(): Promise<void> {
    return (this.destroying ??= this.stopWorkers());
  }

  private async stopWorkers(): Promise<void> {
    this.closed = true;
    if (this.pool === null) return;
    // Workers are not terminated while still loading their modules: Node 20 can abort the whole process
    // then (FATAL ERROR "v8::Module::IsGraphAsync must be used on an instantiated module"), which a job that
    // fails fast (a wrong passphrase) used to hit now and then. Bounded, in case a worker never comes up.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.warm().catch(() => undefined), new Promise((r) => (timer = setTimeout(r, WARM_WAIT_MS)))]);
    clearTimeout(timer);
    await this.pool.destroy();
  }
}
