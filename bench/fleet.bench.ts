/**
 * npm run bench:fleet [-- --count 16] [--size 256] [--rounds 3] [--dir /dev/shm] [--samples 20] [--json]
 * The fleet's scaling and overhead, against a redis-server of its own on a unix socket:
 *  - scaling: COUNT encrypt jobs of SIZE MiB (raw, random data, on tmpfs by default), run by 1 worker and by 2
 *    workers, each `--threads 1 --concurrency 1`; wall time from submit to the last completion, workers already
 *    started. Rounds alternate which configuration goes first; the ratio is the median of the rounds' ratios
 *    (target >= 1.7x). Each round also copies the source COUNT times with `cp`, in one stream and in two at once:
 *    the machine's own scaling for these bytes (memory-bound here: 1.74x on the 2-core VM). Outputs are deleted after each run (COUNT x SIZE on tmpfs meanwhile: 4 GiB by default).
 *  - overhead: SAMPLES 1 MiB jobs submitted one at a time to an idle worker; submit to start is the job's
 *    processedOn minus its timestamp (both set by the same machine's clock here); median and max (target < 50 ms).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { createFleet } from '../src/fleet/index.js';
import { openVault } from '../src/vault/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const count = Number(arg('--count', '16'));
const sizeMiB = Number(arg('--size', '256'));
const rounds = Number(arg('--rounds', '3'));
const samples = Number(arg('--samples', '20'));
const json = process.argv.includes('--json');
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.cjs');
const dir = mkdtempSync(join(arg('--dir', '/dev/shm'), 'vhdcrypt-fleet-bench-'));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function waitLine(child: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    child[stream]!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = re.exec(text);
      if (m) resolve(m[0]);
    });
    child.once('exit', (c) => reject(new Error(`exited ${c} before ${re}: ${text.slice(-500)}`)));
  });
}

function writeSource(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(16 << 20);
  try {
    for (let off = 0; off < mib << 20; off += chunk.length) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(chunk.length, (mib << 20) - off), off);
    }
  } finally {
    closeSync(fd);
  }
}

async function main(): Promise<void> {
  const sock = join(dir, 'redis.sock');
  const redis = spawn('redis-server', ['--port', '0', '--unixsocket', sock, '--dir', dir, '--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction'], { stdio: ['ignore', 'pipe', 'pipe'] });
  redis.stderr!.on('data', () => {});
  await waitLine(redis, 'stdout', /ready to accept connections/i);
  const url = `unix://${sock}`;
  const vault = `file:${join(dir, 'vault')}`;
  await (await openVault(vault, { create: true })).close();
  const src = join(dir, 'src.raw');
  writeSource(src, sizeMiB);
  const workers: ChildProcess[] = [];
  const startWorkers = async (n: number, queue: string) => {
    const started = Array.from({ length: n }, () => {
      const w = spawn(process.execPath, [cli, 'fleet', 'worker', '--redis', url, '--queue', queue, '--threads', '1', '--concurrency', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
      workers.push(w);
      return waitLine(w, 'stderr', /taking jobs/).then(() => w);
    });
    return Promise.all(started);
  };
  const stopWorkers = async (ws: ChildProcess[]) => {
    await Promise.all(ws.map((w) => new Promise((r) => (w.kill('SIGTERM'), w.once('exit', r)))));
  };

  /** Seconds from submit to the last completion of `count` jobs run by `n` workers. */
  const scalingRun = async (n: number, tag: string): Promise<number> => {
    const queue = `scale-${tag}`;
    const ws = await startWorkers(n, queue);
    const fleet = await createFleet({ connection: url, queue });
    const events = await fleet.events();
    const outs = Array.from({ length: count }, (_, i) => join(dir, `${tag}-${i}.enc.raw`));
    try {
      let done = 0;
      const finished = new Promise<void>((resolve, reject) => {
        events.on('completed', () => {
          if (++done === count) resolve();
        });
        events.on('failed', (f: { code: string; message: string }) => reject(new Error(`${f.code}: ${f.message}`)));
      });
      const t0 = performance.now();
      await fleet.submit(outs.map((dst) => ({ source: src, destination: dst, options: { vault } })), { attempts: 1 });
      await finished;
      return (performance.now() - t0) / 1000;
    } finally {
      // Removed after the clock stops: freeing a file's pages is this process's work, not the fleet's, and done
      // during the run it would take CPU from the workers of the 2-worker rounds only (one worker leaves a core idle).
      for (const dst of outs) rmSync(dst, { force: true });
      await events.close();
      await fleet.close();
      await stopWorkers(ws);
    }
  };

  /**
   * The machine's own scaling for the same bytes: COUNT `cp` of the source, one after another in one stream or split
   * over two streams at once (a copy is memory-bound like a job's kernel copies, so two cores need not give 2x).
   */
  const cpRun = async (streams: number, tag: string): Promise<number> => {
    const outs = Array.from({ length: count }, (_, i) => join(dir, `cp-${tag}-${i}.raw`));
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: streams }, async (_, s) => {
        for (let i = s; i < count; i += streams) {
          await new Promise<void>((resolve, reject) => spawn('cp', [src, outs[i]!], { stdio: 'ignore' }).once('exit', (c) => (c === 0 ? resolve() : reject(new Error(`cp exited ${c}`)))));
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    for (const o of outs) rmSync(o, { force: true });
    return seconds;
  };

  const pairs: { one: number; two: number; cpOne: number; cpTwo: number }[] = [];
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? [1, 2] : [2, 1];
    const t: Record<number, number> = {};
    const c: Record<number, number> = {};
    for (const n of order) t[n] = await scalingRun(n, `r${r}w${n}`);
    for (const n of order) c[n] = await cpRun(n, `r${r}s${n}`);
    pairs.push({ one: t[1]!, two: t[2]!, cpOne: c[1]!, cpTwo: c[2]! });
    if (!json) process.stdout.write(`  round ${r + 1}: 1 worker ${t[1]!.toFixed(2)} s, 2 workers ${t[2]!.toFixed(2)} s, ${(t[1]! / t[2]!).toFixed(2)}x; cp one stream ${c[1]!.toFixed(2)} s, two ${c[2]!.toFixed(2)} s, ${(c[1]! / c[2]!).toFixed(2)}x\n`);
  }

  // Overhead: one idle worker, tiny jobs one at a time.
  const tiny = join(dir, 'tiny.raw');
  writeSource(tiny, 1);
  const [w] = await startWorkers(1, 'overhead');
  const fleet = await createFleet({ connection: url, queue: 'overhead' });
  const events = await fleet.events();
  const q = new Queue('overhead', { connection: { path: sock }, prefix: 'vhdcrypt' });
  const overheads: number[] = [];
  let failure: Error | null = null;
  events.on('failed', (f: { code: string; message: string }) => (failure = new Error(`${f.code}: ${f.message}`)));
  try {
    for (let i = 0; i < samples; i++) {
      const dst = join(dir, `tiny-${i}.enc.raw`);
      const done = new Promise<string>((resolve) => {
        const on = ({ jobId }: { jobId: string }) => (events.off('completed', on), resolve(jobId));
        events.on('completed', on);
      });
      await fleet.submit({ source: tiny, destination: dst, options: { vault } });
      const job = (await q.getJob(await done))!;
      if (failure) throw failure;
      overheads.push(job.processedOn! - job.timestamp);
      rmSync(dst, { force: true });
    }
  } finally {
    await q.close();
    await events.close();
    await fleet.close();
    await stopWorkers([w!]);
  }
  redis.kill('SIGTERM');
  const ratio = median(pairs.map((p) => p.one / p.two));
  const result = {
    count, sizeMiB, rounds,
    oneWorkerSeconds: median(pairs.map((p) => p.one)),
    twoWorkersSeconds: median(pairs.map((p) => p.two)),
    speedup: ratio,
    cpSpeedup: median(pairs.map((p) => p.cpOne / p.cpTwo)),
    overheadMs: { median: median(overheads), max: Math.max(...overheads), samples: overheads.length },
    pairs,
  };
  if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  else {
    process.stdout.write(`fleet bench: ${count} jobs of ${sizeMiB} MiB in ${dir}, --threads 1 per worker, median of ${rounds} alternated rounds\n`);
    process.stdout.write(`  1 worker  ${result.oneWorkerSeconds.toFixed(2)} s, 2 workers ${result.twoWorkersSeconds.toFixed(2)} s: ${ratio.toFixed(2)}x (target >= 1.7)\n`);
    process.stdout.write(`  the machine's floor, the same bytes copied by cp in one stream vs two: ${result.cpSpeedup.toFixed(2)}x\n`);
    process.stdout.write(`  queue overhead submit -> start: median ${result.overheadMs.median} ms, max ${result.overheadMs.max} ms over ${samples} jobs (target < 50 ms)\n`);
  }
}

main()
  .catch((e) => {
    process.stderr.write(`fleet bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
