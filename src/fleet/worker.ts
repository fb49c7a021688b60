/**
 * A fleet worker: takes image jobs from the queue and runs them with the engine, one BullMQ job per image.
 *
 * At least once, completed once: the temp file and journal are named after the job id (RunOptions.outputName) and
 * every run resumes, so an attempt after a crash continues from the journal the dead worker left, on whichever
 * machine takes it, and the final rename happens once. A worker killed -9 stops renewing its jobs' locks; BullMQ's
 * stalled-job check hands them to another worker. A worker that loses a lock (Redis away longer than the lock, an
 * event loop stalled) stops that run at once, keeping its journal, so two workers never write one temp file for long.
 * SIGTERM (stop): no new jobs; running ones get `graceMs` to finish, then are stopped at their next batch with a
 * checkpoint and handed back to the queue, not counted as an attempt.
 */
import { hostname } from 'node:os';
import { rm, stat } from 'node:fs/promises';
import { UnrecoverableError, WaitingError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { decryptImage, encryptImage, outputPaths, type RunResult } from '../engine/index.js';
import { cancelKey, checkQueueName, connectionOptions, DEFAULT_QUEUE, KEY_PREFIX, type FleetConnection } from './connection.js';
import { classifyFailure, failureText } from './failure.js';
import { checkJobSpec, engineOptions, JOB_ID, type FleetJobSpec } from './job-spec.js';
import { verifyComplete } from './verify-output.js';
import { FleetError } from './errors.js';

export interface FleetWorkerOptions {
  readonly connection: FleetConnection;
  readonly queue?: string;
  /** Jobs this worker runs at once (default 1). */
  readonly concurrency?: number;
  /** Engine worker threads per job (default: one per core). */
  readonly threads?: number;
  /** Queue-wide rate limit: at most `max` jobs started per `durationMs`, across all workers. */
  readonly limiter?: { readonly max: number; readonly durationMs: number };
  /** How long a job's lock lasts without renewal (default 30000 ms); a dead worker's jobs move on after it. */
  readonly lockDurationMs?: number;
  /** How often this worker looks for stalled jobs (default 30000 ms). */
  readonly stalledIntervalMs?: number;
  /** How many times a job may stall before it fails (default 3). */
  readonly maxStalledCount?: number;
  /** Name recorded on the jobs it takes (default host:pid). */
  readonly name?: string;
  /** Lines worth a log: jobs started, finished, failed, handed back. */
  readonly log?: (line: string) => void;
}

export interface JobResult {
  readonly operation: string;
  readonly source: string;
  readonly destination: string;
  /** 'done': this attempt wrote it; 'exists': the destination already held the complete output. */
  readonly outcome: 'done' | 'exists';
  readonly resumed: boolean;
  readonly bytesProcessed: number;
  readonly seconds: number;
  readonly worker: string;
  readonly secretId: string | null;
  readonly luksUuid: string | null;
  readonly warnings: readonly string[];
}

export interface FleetWorker {
  readonly name: string;
  /** Resolves when the worker is connected and taking jobs. */
  ready(): Promise<void>;
  /** Stop taking jobs; give running ones graceMs to finish, then hand them back. Resolves when the worker is closed. */
  stop(graceMs?: number): Promise<void>;
}

/** Progress goes to Redis at most this often per job (and once at the end). */
const PROGRESS_INTERVAL_MS = 250;
/** How often a running job looks whether `fleet cancel` named it. */
const CANCEL_POLL_MS = 500;

type StopReason = 'handback' | 'cancel' | 'lock-lost';

/** The temp name of a job: its id when that can name a file, else a digest-free fallback BullMQ ids always fit. */
function outputNameOf(id: string): string {
  return JOB_ID.test(id) ? id : `job-${id.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 90)}`;
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

function summary(r: RunResult, worker: string): JobResult {
  return {
    operation: r.operation, source: r.source, destination: r.destination, outcome: 'done', resumed: r.resumed,
    bytesProcessed: Number(r.bytesProcessed), seconds: Number(r.seconds.toFixed(3)), worker,
    secretId: r.secretId, luksUuid: r.luksUuid, warnings: r.warnings,
  };
}

export function startFleetWorker(opts: FleetWorkerOptions): FleetWorker {
  const queueName = checkQueueName(opts.queue ?? DEFAULT_QUEUE);
  const name = opts.name ?? `${hostname()}:${process.pid}`;
  const log = opts.log ?? (() => {});
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 256) throw new FleetError('FLEET_BAD_ARGUMENT', `concurrency expected 1-256, got ${concurrency}`);
  const conn = connectionOptions(opts.connection);
  // A plain connection for the cancel set (the worker's own connections block on the queue).
  const redis = new Redis({ ...conn, lazyConnect: false });
  redis.on('error', () => {});

  async function processJob(job: Job, token: string | undefined, signal: AbortSignal | undefined): Promise<JobResult> {
    const id = String(job.id);
    let spec: FleetJobSpec;
    try {
      spec = checkJobSpec(job.data);
    } catch (e) {
      throw new UnrecoverableError(failureText(classifyFailure(e)));
    }
    const paths = outputPaths(spec.destination, outputNameOf(id));
    if (await fileExists(spec.destination)) {
      try {
        await verifyComplete(spec);
      } catch (e) {
        // A destination that is not this job's output fails at once; a source that could not be read may come back.
        const f = classifyFailure(e);
        throw f.permanent ? new UnrecoverableError(failureText(f)) : new Error(failureText(f));
      }
      // An attempt that renamed its output into place and died before the rest: what it left beside it goes.
      await rm(paths.temp, { force: true });
      await rm(paths.journal, { force: true });
      await rm(paths.journal + '.new', { force: true });
      log(`${id}: ${spec.destination} already holds the complete output`);
      return { operation: spec.operation, source: spec.source, destination: spec.destination, outcome: 'exists', resumed: false, bytesProcessed: 0, seconds: 0, worker: name, secretId: null, luksUuid: null, warnings: [] };
    }
    const own = new AbortController();
    const runSignal = signal ? AbortSignal.any([signal, own.signal]) : own.signal;
    const poll = setInterval(() => {
      redis.sismember(cancelKey(queueName), id).then(
        (hit) => {
          if (hit === 1) own.abort('cancel');
        },
        () => {},
      );
    }, CANCEL_POLL_MS);
    let last = 0;
    let pending: Promise<unknown> = Promise.resolve();
    const onProgress = (p: { bytesDone: bigint; bytesTotal: bigint; rate: number }) => {
      const now = Date.now();
      if (now - last < PROGRESS_INTERVAL_MS && p.bytesDone !== p.bytesTotal) return;
      last = now;
      pending = job.updateProgress({ bytesDone: Number(p.bytesDone), bytesTotal: Number(p.bytesTotal), rate: Math.round(p.rate) }).catch(() => {});
    };
    log(`${id}: ${spec.operation} ${spec.source} -> ${spec.destination} (attempt ${job.attemptsStarted})`);
    try {
      const run = {
        ...engineOptions(spec),
        ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
        resume: true,
        outputName: outputNameOf(id),
        signal: runSignal,
        onProgress,
        onWarning: (m: string) => void job.log(m).catch(() => {}),
      };
      const r = spec.operation === 'encrypt' ? await encryptImage(spec.source, spec.destination, run) : await decryptImage(spec.source, spec.destination, run);
      await pending;
      log(`${id}: done${r.resumed ? ' (resumed)' : ''} in ${r.seconds.toFixed(2)} s`);
      return summary(r, name);
    } catch (e) {
      const reason: StopReason | undefined = runSignal.aborted ? (runSignal.reason as StopReason) : undefined;
      if (reason === 'cancel') {
        await rm(paths.temp, { force: true });
        await rm(paths.journal, { force: true });
        await redis.srem(cancelKey(queueName), id).catch(() => {});
        log(`${id}: cancelled`);
        throw new UnrecoverableError(failureText({ code: 'FLEET_CANCELLED', message: 'cancelled by fleet cancel; its temp file and journal were removed' }));
      }
      if (reason === 'handback' && token !== undefined) {
        // The run kept its temp file and journal: whichever worker takes the job next resumes it.
        await job.moveToWait(token);
        log(`${id}: handed back to the queue`);
        throw new WaitingError();
      }
      if (reason === 'lock-lost') log(`${id}: lock lost; stopped (another worker resumes it)`);
      const f = classifyFailure(e);
      log(`${id}: failed: ${failureText(f)}${f.permanent ? '' : ' (will retry)'}`);
      throw f.permanent ? new UnrecoverableError(failureText(f)) : new Error(failureText(f));
    } finally {
      clearInterval(poll);
    }
  }

  const worker = new Worker(queueName, (job, token, signal) => processJob(job, token, signal), {
    connection: conn as ConnectionOptions,
    prefix: KEY_PREFIX,
    name,
    concurrency,
    lockDuration: opts.lockDurationMs ?? 30_000,
    stalledInterval: opts.stalledIntervalMs ?? 30_000,
    maxStalledCount: opts.maxStalledCount ?? 3,
    ...(opts.limiter ? { limiter: { max: opts.limiter.max, duration: opts.limiter.durationMs } } : {}),
  });
  // Connection errors while Redis restarts are retried by ioredis; they are no reason to stop.
  worker.on('error', (e) => log(`worker: ${e.message}`));
  worker.on('lockRenewalFailed', (ids) => {
    for (const id of ids) worker.cancelJob(id, 'lock-lost');
  });

  return {
    name,
    async ready() {
      await worker.waitUntilReady();
    },
    async stop(graceMs = 0) {
      const closed = worker.close();
      const timer = setTimeout(() => worker.cancelAllJobs('handback'), graceMs);
      try {
        await closed;
      } finally {
        clearTimeout(timer);
        redis.disconnect();
      }
    },
  };
}
