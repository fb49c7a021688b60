/**
 * createFleet: the producer's side of the queue. submit puts image jobs on a BullMQ queue in Redis, status reads
 * where they stand (jobs by state, running jobs' progress, failures with their codes, bytes/s and ETA), events
 * follows them live, cancel and retry act on one job.
 */
import { EventEmitter } from 'node:events';
import { stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { Queue, QueueEvents, type ConnectionOptions, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { FleetError } from './errors.js';
import { parseFailure } from './failure.js';
import { cancelKey, checkQueueName, connectionOptions, DEFAULT_QUEUE, KEY_PREFIX, openRedis, type FleetConnection } from './connection.js';
import { checkJobId, checkJobSpec, defaultJobId, specFromInput, type FleetJobSpec, type FleetOperation } from './job-spec.js';

export interface FleetOptions {
  readonly connection: FleetConnection;
  /** Queue name (default 'vhdcrypt'). */
  readonly queue?: string;
}

export interface SubmitInput {
  readonly operation?: FleetOperation;
  readonly source: string;
  readonly destination: string;
  /** The engine options a job may carry (no secret values): format, kek, keySize, vault, keyFile, ... */
  readonly options?: Readonly<Record<string, unknown>>;
  /** Job id (default: the destination's name and a digest of its path, so one destination is one job). */
  readonly id?: string;
  /** 1 (first) to 2097152; jobs without a priority come before any prioritized job (BullMQ's rule). */
  readonly priority?: number;
}

export interface SubmitOptions {
  /** Attempts for transient failures (default 5); permanent ones fail at the first. */
  readonly attempts?: number;
  /** First backoff delay in ms, doubled at each attempt (default 2000). */
  readonly backoffMs?: number;
  /** Relative paths are resolved against this directory (default: process.cwd()). */
  readonly cwd?: string;
}

export interface SubmitResult {
  readonly id: string;
  /** False when a job of this id was already there (it is left as it is: `fleet retry` runs a failed one again). */
  readonly added: boolean;
  readonly state: string;
}

export interface RunningJob {
  readonly id: string;
  readonly operation: string;
  readonly source: string;
  readonly destination: string;
  readonly worker: string | null;
  readonly attempt: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  /** Bytes per second of this attempt. */
  readonly rate: number;
  readonly startedAt: number | null;
}

export interface FailedJob {
  readonly id: string;
  readonly operation: string;
  readonly source: string;
  readonly destination: string;
  readonly code: string;
  readonly message: string;
  readonly attempts: number;
  readonly finishedAt: number | null;
}

export interface FleetStatus {
  readonly queue: string;
  readonly at: number;
  /** Jobs by state (BullMQ's: waiting, prioritized, delayed, active, completed, failed). */
  readonly counts: Readonly<Record<string, number>>;
  readonly running: readonly RunningJob[];
  /** The most recent failures (up to 100), newest first. */
  readonly failed: readonly FailedJob[];
  /** The running jobs' rates together. */
  readonly bytesPerSecond: number;
  /** Bytes left: the running jobs' remainders and the source sizes of the jobs not started. */
  readonly bytesRemaining: number;
  /** bytesRemaining at bytesPerSecond; null while nothing runs. */
  readonly etaSeconds: number | null;
}

/** A job's progress as the worker reports it (BullMQ progress: a JSON object). */
export interface JobProgress {
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly rate: number;
}

export function progressOf(p: unknown): JobProgress {
  const o = (typeof p === 'object' && p !== null ? p : {}) as Record<string, unknown>;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
  return { bytesDone: num(o['bytesDone']), bytesTotal: num(o['bytesTotal']), rate: num(o['rate']) };
}

/** The events of the queue, live: 'active', 'progress', 'completed', 'failed' (with code and message), 'stalled'. */
export class FleetEvents extends EventEmitter {
  constructor(private readonly qe: QueueEvents) {
    super();
    qe.on('active', ({ jobId }) => this.emit('active', { jobId }));
    qe.on('progress', ({ jobId, data }) => this.emit('progress', { jobId, ...progressOf(data) }));
    qe.on('completed', ({ jobId, returnvalue }) => this.emit('completed', { jobId, result: returnvalue }));
    qe.on('failed', ({ jobId, failedReason }) => this.emit('failed', { jobId, ...parseFailure(failedReason) }));
    qe.on('stalled', ({ jobId }) => this.emit('stalled', { jobId }));
    qe.on('error', (e) => this.emit('connectionError', e));
  }
  /** Resolves once the events are being received. */
  ready(): Promise<void> {
    return this.qe.waitUntilReady().then(() => undefined);
  }
  close(): Promise<void> {
    return this.qe.close();
  }
}

export interface Fleet {
  readonly queueName: string;
  submit(input: SubmitInput | readonly SubmitInput[], opts?: SubmitOptions): Promise<SubmitResult[]>;
  status(): Promise<FleetStatus>;
  events(): Promise<FleetEvents>;
  cancel(id: string): Promise<'removed' | 'cancelling'>;
  retry(id: string): Promise<void>;
  close(): Promise<void>;
}

const PENDING_STATES = ['waiting', 'prioritized', 'delayed'] as const;

function jobSpecOrNull(job: Job): FleetJobSpec | null {
  try {
    return checkJobSpec(job.data);
  } catch {
    return null;
  }
}

/** Open the queue (FLEET_REDIS_FAILED when Redis cannot be reached). */
export async function createFleet(opts: FleetOptions): Promise<Fleet> {
  const queueName = checkQueueName(opts.queue ?? DEFAULT_QUEUE);
  const redis: Redis = await openRedis(opts.connection);
  const queue = new Queue(queueName, { connection: redis, prefix: KEY_PREFIX });
  queue.on('error', () => {});

  async function jobOrThrow(id: string): Promise<Job> {
    const job = await queue.getJob(id);
    if (!job) throw new FleetError('FLEET_JOB_NOT_FOUND', `no job ${id} in queue ${queueName}`);
    return job;
  }

  return {
    queueName,
    async submit(input, sopts = {}) {
      const list = Array.isArray(input) ? (input as readonly SubmitInput[]) : [input as SubmitInput];
      const attempts = sopts.attempts ?? 5;
      const backoffMs = sopts.backoffMs ?? 2000;
      if (!Number.isSafeInteger(attempts) || attempts < 1 || attempts > 100) throw new FleetError('FLEET_BAD_ARGUMENT', `attempts expected 1-100, got ${attempts}`);
      if (!Number.isSafeInteger(backoffMs) || backoffMs < 0) throw new FleetError('FLEET_BAD_ARGUMENT', `backoff expected a whole number of ms, got ${backoffMs}`);
      // Every job is checked before any is added: a manifest with one bad line adds nothing.
      const prepared = await Promise.all(
        list.map(async (inp) => {
          const spec = specFromInput(inp, sopts.cwd ?? process.cwd());
          const id = inp.id !== undefined ? checkJobId(inp.id) : defaultJobId(spec.operation, spec.destination);
          if (inp.priority !== undefined && (!Number.isSafeInteger(inp.priority) || inp.priority < 1 || inp.priority > 2_097_152)) {
            throw new FleetError('FLEET_BAD_ARGUMENT', `priority expected 1-2097152, got ${inp.priority}`);
          }
          let sourceBytes = 0;
          if (isAbsolute(spec.source)) sourceBytes = Number((await stat(spec.source)).size);
          return { id, spec: { ...spec, sourceBytes }, priority: inp.priority };
        }),
      );
      const out: SubmitResult[] = [];
      for (const p of prepared) {
        const before = await queue.getJob(p.id);
        const job = before ?? (await queue.add(p.spec.operation, p.spec, {
          jobId: p.id,
          attempts,
          backoff: { type: 'exponential', delay: backoffMs },
          ...(p.priority !== undefined ? { priority: p.priority } : {}),
        }));
        out.push({ id: p.id, added: before === undefined, state: await job.getState() });
      }
      return out;
    },

    async status() {
      const counts = await queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed');
      const active = await queue.getJobs(['active'], 0, 999);
      const failedJobs = await queue.getJobs(['failed'], 0, 99);
      const pending = await queue.getJobs([...PENDING_STATES], 0, 9999);
      const running: RunningJob[] = active.map((j) => {
        const s = jobSpecOrNull(j);
        const p = progressOf(j.progress);
        return {
          id: String(j.id), operation: s?.operation ?? j.name, source: s?.source ?? '', destination: s?.destination ?? '',
          worker: j.processedBy ?? null, attempt: j.attemptsStarted, ...p, startedAt: j.processedOn ?? null,
        };
      });
      const failed: FailedJob[] = failedJobs.map((j) => {
        const s = jobSpecOrNull(j);
        return {
          id: String(j.id), operation: s?.operation ?? j.name, source: s?.source ?? '', destination: s?.destination ?? '',
          ...parseFailure(j.failedReason), attempts: j.attemptsMade, finishedAt: j.finishedOn ?? null,
        };
      });
      const bytesPerSecond = running.reduce((a, r) => a + r.rate, 0);
      const bytesRemaining =
        running.reduce((a, r) => a + Math.max(0, (r.bytesTotal || (jobSpecOrNull(active.find((j) => String(j.id) === r.id)!)?.sourceBytes ?? 0)) - r.bytesDone), 0) +
        pending.reduce((a, j) => a + (jobSpecOrNull(j)?.sourceBytes ?? 0), 0);
      return {
        queue: queueName, at: Date.now(), counts, running, failed, bytesPerSecond, bytesRemaining,
        etaSeconds: bytesPerSecond > 0 ? bytesRemaining / bytesPerSecond : null,
      };
    },

    async events() {
      const qe = new QueueEvents(queueName, { connection: connectionOptions(opts.connection) as ConnectionOptions, prefix: KEY_PREFIX });
      const ev = new FleetEvents(qe);
      await ev.ready();
      return ev;
    },

    async cancel(id) {
      const job = await jobOrThrow(checkJobId(id));
      const state = await job.getState();
      if (state === 'active') {
        // The worker running it watches this set: it stops the run, removes its temp file and fails the job.
        await redis.sadd(cancelKey(queueName), id);
        return 'cancelling';
      }
      if ((PENDING_STATES as readonly string[]).includes(state)) {
        await job.remove();
        return 'removed';
      }
      throw new FleetError('FLEET_JOB_STATE', `job ${id} is ${state}: only a waiting, delayed or running job can be cancelled`);
    },

    async retry(id) {
      const job = await jobOrThrow(checkJobId(id));
      const state = await job.getState();
      if (state !== 'failed') throw new FleetError('FLEET_JOB_STATE', `job ${id} is ${state}: only a failed job can be retried`);
      await job.retry('failed');
    },

    async close() {
      await queue.close();
      redis.disconnect();
    },
  };
}
