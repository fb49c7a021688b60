/**
 * The piscina worker: runs AES-XTS over batches held in shared slots. It keeps
 * one Xts per job (built from the job's shared key on first use) so the key
 * schedule is expanded once per thread, and disposes it on the job's dispose task.
 * When the task carries the images' plans (planned-io.ts), the worker also reads
 * the batch into its slot and writes it out, with positional system calls on the
 * images' descriptors: the batch goes disk -> slot -> XTS in place -> disk on this
 * thread, never copied and never waited for by the main thread.
 */
import { createXts, type Xts } from '../../crypto/index.js';
import { randomBytes } from 'node:crypto';
import { VhdcryptError } from '../../errors.js';
import { readPlannedSync, writePlannedSync, type FileWriteReport } from '../../image/index.js';
import { pieceTags } from './block-tag.js';
import type { CryptTask, DisposeTask, WarmTask, WorkerReply, WorkerTask } from './worker-messages.js';

const jobs = new Map<string, Xts>();
const BARRIER_TIMEOUT_MS = 10_000;

function xtsFor(t: CryptTask): Xts {
  let x = jobs.get(t.jobId);
  if (!x) {
    const key = new Uint8Array(t.key, 0, t.keyLength);
    x = createXts(key, { backend: t.backend });
    jobs.set(t.jobId, x);
  }
  return x;
}

/** A system call's failure, told apart so the engine can rebuild it (errno name) and say which side failed. */
class SideError extends Error {
  constructor(
    readonly side: 'read' | 'write',
    readonly original: unknown,
  ) {
    super(original instanceof Error ? original.message : String(original));
  }
}

function onSide<T>(side: 'read' | 'write', f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new SideError(side, e);
  }
}

function crypt(t: CryptTask): WorkerReply {
  const x = xtsFor(t);
  const data = new Uint8Array(t.buffer, t.offset, t.length);
  if (t.read) {
    const plan = t.read;
    onSide('read', () => readPlannedSync(plan, data));
  }
  const opts = { tweakStep: t.tweakStep };
  if (t.encrypt) x.encryptSectors(data, t.firstTweak, t.sectorSize, opts);
  else x.decryptSectors(data, t.firstTweak, t.sectorSize, opts);
  // Tagged while the batch is still in this core's cache: the manifest then needs no second pass over the output.
  // The key is read in place from the job's shared copy (node:crypto copies it into its cipher context, which
  // OpenSSL cleanses when freed): this thread allocates no copy of it to wipe.
  const tags = t.tagPieces !== null && t.tagKey !== null ? pieceTags(new Uint8Array(t.tagKey), data, t.tagPieces.pieceBytes, t.tagPieces.firstIndex, t.tagPieces.bitmapBytes) : undefined;
  let wrote: FileWriteReport | undefined;
  if (t.write) {
    const plan = t.write;
    wrote = onSide('write', () => writePlannedSync(plan, data));
  }
  return { ok: true, backend: x.backend, kernel: x.kernel, ...(wrote ? { wrote } : {}), ...(tags ? { tags } : {}) };
}

function dispose(t: DisposeTask): WorkerReply {
  jobs.get(t.jobId)?.dispose();
  jobs.delete(t.jobId);
  // Hold this worker until every worker has its dispose task, so each thread gets one.
  const counter = new Int32Array(t.barrier);
  Atomics.add(counter, 0, 1);
  Atomics.notify(counter, 0);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  for (;;) {
    const n = Atomics.load(counter, 0);
    if (n >= t.parties) break;
    const left = deadline - Date.now();
    if (left <= 0) break;
    Atomics.wait(counter, 0, n, left);
  }
  return { ok: true, backend: '', kernel: '' };
}

function warm(t: WarmTask): WorkerReply {
  const key = randomBytes(64);
  const x = createXts(key, { backend: t.backend });
  key.fill(0);
  const reply: WorkerReply = { ok: true, backend: x.backend, kernel: x.kernel };
  x.dispose();
  return reply;
}

/** Piscina entry point. Errors come back as values so their codes survive the thread boundary. */
export default function run(task: WorkerTask): WorkerReply {
  try {
    return task.kind === 'crypt' ? crypt(task) : task.kind === 'dispose' ? dispose(task) : warm(task);
  } catch (caught) {
    const side = caught instanceof SideError ? caught.side : undefined;
    const e = caught instanceof SideError ? caught.original : caught;
    const code = e instanceof VhdcryptError ? e.code : 'ENGINE_WORKER_FAILED';
    const message = e instanceof Error ? e.message : String(e);
    const errno = (e as NodeJS.ErrnoException | null)?.code;
    if (side !== undefined && typeof errno === 'string' && !(e instanceof VhdcryptError)) return { ok: false, code, message, errno, side };
    return side !== undefined ? { ok: false, code, message, side } : { ok: false, code, message };
  }
}
