/**
 * The fleet end to end, against a real redis-server and worker processes of the built CLI: three workers take 24
 * images (fixed, dynamic, raw) and a bad one; one worker is killed -9 mid-job and another resumes the job from the
 * journal named after its id; every output exists once and decrypts to its source, no temp file is left, the bad
 * input fails once with its code. Then Redis is restarted (appendonly) in the middle of a run, which completes;
 * SIGTERM hands a running job back; cancel and retry act on one job.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, writeFileSync, openSync, readSync, writeSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { decryptImage } from '../src/engine/index.js';
import { openVault } from '../src/vault/index.js';
import { createFleet, type Fleet, type FleetEvents } from '../src/fleet/index.js';
import { makeRaw, qemuCompare, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { exited, slowExport, startRedis, startWorker, until, type SlowExport, type TestRedis, type WorkerProcess } from './fixtures/fleet/harness.js';

const MIB = 1 << 20;

function build(): void {
  // The workers run the built CLI (bin/vhdcrypt.cjs -> dist/); `npm test` builds first.
  if (!existsSync(join(import.meta.dirname, '../dist/src/fleet/index.js'))) {
    const r = spawnSync('npm', ['run', 'build'], { cwd: join(import.meta.dirname, '..'), stdio: 'ignore' });
    if (r.status !== 0) throw new Error('npm run build failed');
  }
}

/** A VHD whose footer checksum is wrong: VHD_BAD_CHECKSUM. */
function badVhd(dir: string): string {
  const raw = join(dir, 'bad.raw');
  makeRaw(raw, 4 * MIB, [[0, MIB]]);
  const vhd = join(dir, 'bad.vhd');
  rawToVhd(raw, vhd, 'fixed');
  const fd = openSync(vhd, 'r+');
  try {
    const at = statSync(vhd).size - 512 + 64;
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, at);
    for (let i = 0; i < 4; i++) b[i] = b[i]! ^ 0xff;
    writeSync(fd, b, 0, 4, at);
  } finally {
    closeSync(fd);
  }
  return vhd;
}

interface Image {
  readonly src: string;
  readonly fmt: 'raw' | 'vpc';
  readonly dst: string;
}

/** Decrypt each output with the engine and compare with its source (qemu-img compare reads both containers), four at a time. */
async function checkOutputs(dir: string, images: readonly Image[], vault: string): Promise<void> {
  const queue = [...images];
  const one = async (im: Image) => {
    expect(existsSync(im.dst), im.dst).toBe(true);
    const back = join(dir, `${im.dst.split('/').pop()}.back`);
    await decryptImage(im.dst, back, { vault, threads: 1 });
    const c = qemuCompare(im.src, im.fmt, back, im.fmt);
    expect(c.same, `${im.dst}: ${c.output}`).toBe(true);
    removeDir(back);
  };
  await Promise.all([0, 1, 2, 3].map(async () => {
    for (let im = queue.shift(); im; im = queue.shift()) await one(im);
  }));
}

function leftovers(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.includes('.vhdcrypt-tmp') || n.includes('.vhdcrypt-journal'));
}

describe('fleet: three workers, 24 images, one worker killed -9', () => {
  let dir: string;
  let redis: TestRedis;
  let fleet: Fleet;
  let events: FleetEvents;
  const workers: WorkerProcess[] = [];
  let vault: string;
  let nbdkit: SlowExport | undefined;

  beforeAll(async () => {
    build();
    dir = tempDir('fleet');
    vault = `file:${join(dir, 'vault')}`;
    await (await openVault(vault, { create: true })).close();
    redis = await startRedis(dir);
    fleet = await createFleet({ connection: redis.url, queue: 'q1' });
    events = await fleet.events();
  });

  afterAll(async () => {
    nbdkit?.child.kill('SIGTERM');
    for (const w of workers) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => exited(w.child)));
    // Closing what talks to Redis may fail when a test left it down: the server still stops.
    await Promise.allSettled([events?.close(), fleet?.close()]);
    await redis?.stop();
    removeDir(dir);
  });

  it('completes every image once, resumes the killed job elsewhere, and fails the bad input once with its code', async () => {
    const images: Image[] = [];
    let slowSource = '';
    for (let i = 0; i < 24; i++) {
      const kind = (['raw', 'fixed', 'dynamic'] as const)[i % 3]!;
      // One large raw image read through an NBD export that answers each read after 200 ms (nbdkit's delay
      // filter): its job runs for seconds, long enough to kill its worker in the middle of it.
      const slow = i === 0;
      const size = slow ? 16 * MIB : 3 * MIB;
      const raw = join(dir, `img${i}.raw`);
      makeRaw(raw, size, slow ? [[0, size]] : [[0, MIB], [2 * MIB, 512 * 1024]]);
      if (slow) {
        nbdkit = await slowExport(dir, raw, 'slow');
        slowSource = nbdkit.uri;
        images.push({ src: raw, fmt: 'raw', dst: join(dir, `img${i}.enc.raw`) });
      } else if (kind === 'raw') images.push({ src: raw, fmt: 'raw', dst: join(dir, `img${i}.enc.raw`) });
      else {
        const vhd = join(dir, `img${i}.${kind}.vhd`);
        rawToVhd(raw, vhd, kind);
        removeDir(raw);
        images.push({ src: vhd, fmt: 'vpc', dst: join(dir, `img${i}.enc.vhd`) });
      }
    }
    const bad = badVhd(dir);
    workers.push(...(await Promise.all([0, 1, 2].map(() => startWorker(redis.url, ['--queue', 'q1'])))));
    // The slow job: small batches and checkpoints, a journal every MiB, so its killed run has something to resume from.
    const options = { vault };
    const slowOptions = { vault, batchBytes: MIB, checkpointBytes: MIB };
    const submitted = await fleet.submit(
      [...images.map((im, i) => ({ source: i === 0 ? slowSource : im.src, destination: im.dst, options: i === 0 ? slowOptions : options })), { source: bad, destination: join(dir, 'bad.enc.vhd'), options }],
      { backoffMs: 200 },
    );
    expect(submitted.every((s) => s.added)).toBe(true);
    const slowId = submitted[0]!.id;
    // Submitting the same destination again is the same job: nothing is added.
    const again = await fleet.submit({ source: images[1]!.src, destination: images[1]!.dst, options });
    expect(again[0]!.added).toBe(false);

    // Kill the worker of a large job once it is past its first checkpoints and well before its end.
    const victim = new Promise<string>((resolve) => {
      const onProgress = (p: { jobId: string; bytesDone: number; bytesTotal: number }) => {
        if (p.jobId === slowId && p.bytesDone >= 3 * MIB && p.bytesDone < p.bytesTotal / 2) {
          events.off('progress', onProgress);
          resolve(p.jobId);
        }
      };
      events.on('progress', onProgress);
    });
    const killedJob = await victim;
    const running = (await fleet.status()).running.find((r) => r.id === killedJob);
    const killed = workers.find((w) => w.name === running?.worker);
    expect(killed, `worker of ${killedJob}`).toBeDefined();
    killed!.child.kill('SIGKILL');
    await exited(killed!.child);

    const final = await until(async () => {
      const s = await fleet.status();
      return s.counts['completed']! + s.counts['failed']! === 25 ? s : null;
    }, 100_000, 'all 25 jobs to finish');
    if (final.failed.length > 1) console.log(readFileSync(join(dir, 'slow.nbdkit.log'), 'utf8'));
    expect(final.failed.map((f) => [f.destination, f.code, f.attempts, f.message.slice(0, 200)])).toEqual([[join(dir, 'bad.enc.vhd'), 'VHD_BAD_CHECKSUM', 1, expect.stringContaining('VHD footer: checksum')]]);
    expect(final.counts['completed']).toBe(24);

    // The killed job was handed to another worker, which resumed it from the journal named after the job.
    const { Queue } = await import('bullmq');
    const q = new Queue('q1', { connection: { path: redis.socket }, prefix: 'vhdcrypt' });
    try {
      const job = await q.getJob(killedJob);
      expect(job!.returnvalue.resumed).toBe(true);
      expect(job!.returnvalue.worker).not.toBe(killed!.name);
    } finally {
      await q.close();
    }
    expect(leftovers(dir)).toEqual([]);
    // Beside each VHD output its authenticated chain manifest (see verify); the images themselves once each.
    const outputs = readdirSync(dir).filter((n) => n.includes('.enc.') && !n.endsWith('.chain-manifest')).sort();
    expect(outputs).toEqual(images.map((im) => im.dst.split('/').pop()!).sort());
    // Every output decrypts to its source: decrypt jobs on the same fleet, then qemu-img compare.
    await fleet.submit(images.map((im) => ({ operation: 'decrypt' as const, source: im.dst, destination: `${im.dst}.back`, options: { vault } })));
    await until(async () => ((await fleet.status()).counts['completed'] === 48 ? true : null), 100_000, 'the 24 decrypt jobs to complete');
    for (const im of images) {
      const c = qemuCompare(im.src, im.fmt, `${im.dst}.back`, im.fmt);
      expect(c.same, `${im.dst}: ${c.output}`).toBe(true);
    }
    expect(leftovers(dir)).toEqual([]);
  });
});

describe('fleet: Redis restarted mid-run, SIGTERM hands a job back, cancel and retry', () => {
  let dir: string;
  let redis: TestRedis;
  let fleet: Fleet;
  let events: FleetEvents;
  const workers: WorkerProcess[] = [];
  const exports: SlowExport[] = [];
  let vault: string;
  const options = () => ({ vault, batchBytes: MIB, checkpointBytes: MIB });

  beforeAll(async () => {
    build();
    dir = tempDir('fleet2');
    vault = `file:${join(dir, 'vault')}`;
    await (await openVault(vault, { create: true })).close();
    redis = await startRedis(dir);
    fleet = await createFleet({ connection: redis.url, queue: 'q2' });
    events = await fleet.events();
    // --grace 0: SIGTERM hands running jobs back at once.
    workers.push(...(await Promise.all([0, 1].map(() => startWorker(redis.url, ['--queue', 'q2', '--grace', '0'])))));
  });

  afterAll(async () => {
    for (const e of exports) e.child.kill('SIGTERM');
    for (const w of workers) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => exited(w.child)));
    // Closing what talks to Redis may fail when a test left it down: the server still stops.
    await Promise.allSettled([events?.close(), fleet?.close()]);
    await redis?.stop();
    removeDir(dir);
  });

  /** A slow NBD source of `mib` MiB random data; returns its raw file and export. */
  async function slowImage(name: string, mib: number): Promise<{ raw: string; uri: string }> {
    const raw = join(dir, `${name}.raw`);
    makeRaw(raw, mib * MIB, [[0, mib * MIB]]);
    const e = await slowExport(dir, raw, name);
    exports.push(e);
    return { raw, uri: e.uri };
  }

  function progressPast(id: string, bytes: number): Promise<void> {
    return new Promise((resolve) => {
      const on = (p: { jobId: string; bytesDone: number }) => {
        if (p.jobId === id && p.bytesDone >= bytes) {
          events.off('progress', on);
          resolve();
        }
      };
      events.on('progress', on);
    });
  }

  async function stateOf(id: string): Promise<string> {
    const { Queue } = await import('bullmq');
    const q = new Queue('q2', { connection: { path: redis.socket }, prefix: 'vhdcrypt' });
    try {
      return (await q.getJob(id))!.getState();
    } finally {
      await q.close();
    }
  }

  it('a run completes across a Redis restart (appendonly)', async () => {
    const slow = await slowImage('r0', 8);
    const images: Image[] = [{ src: slow.raw, fmt: 'raw', dst: join(dir, 'r0.enc.raw') }];
    for (let i = 1; i < 6; i++) {
      const raw = join(dir, `r${i}.raw`);
      makeRaw(raw, 2 * MIB, [[0, MIB]]);
      images.push({ src: raw, fmt: 'raw', dst: join(dir, `r${i}.enc.raw`) });
    }
    const [first] = await fleet.submit(images.map((im, i) => ({ source: i === 0 ? slow.uri : im.src, destination: im.dst, options: options() })), { backoffMs: 200 });
    await progressPast(first!.id, 2 * MIB);
    await redis.restart();
    await until(async () => {
      const s = await fleet.status();
      return s.counts['completed'] === 6 ? s : null;
    }, 60_000, 'the six jobs to complete after the restart');
    expect(leftovers(dir)).toEqual([]);
    await checkOutputs(dir, images, vault);
  });

  it('a destination that already holds the complete output is done; one that holds something else fails once', async () => {
    // r1.enc.raw was completed above; a second job for it (another id) finds it complete and writes nothing.
    const src = join(dir, 'r1.raw');
    const dst = join(dir, 'r1.enc.raw');
    const before = statSync(dst).mtimeMs;
    const other = join(dir, 'other.enc.raw');
    makeRaw(other, 3 * MIB, [[0, MIB]]);
    const [again, clash] = await fleet.submit([
      { id: 'again-r1', source: src, destination: dst, options: options() },
      { id: 'clash', source: src, destination: other, options: options() },
    ]);
    const { Queue } = await import('bullmq');
    const q = new Queue('q2', { connection: { path: redis.socket }, prefix: 'vhdcrypt' });
    try {
      // The state first, then the job: a job read while active and found completed a moment later holds no
      // return value yet (BullMQ stores it and moves the job in one step).
      const done = await until(async () => ((await q.getJobState(again!.id)) === 'completed' ? await q.getJob(again!.id) : null), 30_000, 'the repeated job');
      expect(done.returnvalue.outcome).toBe('exists');
      expect(statSync(dst).mtimeMs).toBe(before);
      const failed = await until(async () => (await fleet.status()).failed.find((f) => f.id === clash!.id), 30_000, 'the clashing job to fail');
      expect([failed.code, failed.attempts]).toEqual(['FLEET_DEST_MISMATCH', 1]);
    } finally {
      await q.close();
    }
  });

  it('SIGTERM stops a running job at a checkpoint and hands it back; another worker resumes it', async () => {
    const slow = await slowImage('t0', 10);
    const [job] = await fleet.submit({ source: slow.uri, destination: join(dir, 't0.enc.raw'), options: options() });
    await progressPast(job!.id, 3 * MIB);
    const running = (await fleet.status()).running.find((r) => r.id === job!.id)!;
    const w = workers.find((x) => x.name === running.worker)!;
    w.child.kill('SIGTERM');
    expect((await exited(w.child)).code).toBe(0);
    expect(w.log()).toMatch(new RegExp(`${job!.id}: handed back to the queue`));
    const done = await until(async () => ((await stateOf(job!.id)) === 'completed' ? true : null), 60_000, 'the handed-back job to complete');
    expect(done).toBe(true);
    const { Queue } = await import('bullmq');
    const q = new Queue('q2', { connection: { path: redis.socket }, prefix: 'vhdcrypt' });
    try {
      const j = (await q.getJob(job!.id))!;
      expect(j.returnvalue.resumed).toBe(true);
      expect(j.returnvalue.worker).not.toBe(w.name);
      expect(j.failedReason ?? '').toBe('');
    } finally {
      await q.close();
    }
    await checkOutputs(dir, [{ src: slow.raw, fmt: 'raw', dst: join(dir, 't0.enc.raw') }], vault);
    workers.push(await startWorker(redis.url, ['--queue', 'q2', '--grace', '0']));
  });

  it('cancel stops a running job and removes its temp file; retry runs it again to completion', async () => {
    const slow = await slowImage('c0', 10);
    const dst = join(dir, 'c0.enc.raw');
    const [job] = await fleet.submit({ source: slow.uri, destination: dst, options: options() });
    await progressPast(job!.id, 2 * MIB);
    expect(await fleet.cancel(job!.id)).toBe('cancelling');
    const failed = await until(async () => (await fleet.status()).failed.find((f) => f.id === job!.id), 30_000, 'the cancelled job to fail');
    expect(failed.code).toBe('FLEET_CANCELLED');
    expect(leftovers(dir)).toEqual([]);
    // A finished job cannot be cancelled; an unknown one is named.
    await expect(fleet.cancel(job!.id)).rejects.toMatchObject({ code: 'FLEET_JOB_STATE' });
    await expect(fleet.retry('no-such-job')).rejects.toMatchObject({ code: 'FLEET_JOB_NOT_FOUND' });
    await fleet.retry(job!.id);
    await until(async () => ((await stateOf(job!.id)) === 'completed' ? true : null), 60_000, 'the retried job to complete');
    await checkOutputs(dir, [{ src: slow.raw, fmt: 'raw', dst }], vault);
  });
});
