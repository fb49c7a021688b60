/**
 * The structure that makes the engine fast: each thread that crypts a batch (a worker, or with the native kernel the
 * calling thread as one of the --threads lanes) reads, encrypts and writes it in its slot with positional system
 * calls of its own; the pipeline never goes through a flat image's own read or write, and no batch is copied on the
 * way. Checked in process (the pipeline's read and write are never called, yet the output holds the ciphertext
 * node:crypto expects) and from outside (strace: each batch of a CLI run is read once and written once, by one
 * thread; with --threads 2 one worker and the calling thread). Small jobs run inline, and give the same bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, openSync, readFileSync, readSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CryptPool, SlotRing, encryptImage, decryptImage, runSectorPipeline, verifyImage } from '../src/engine/index.js';
import { batchesOf, payloadRanges } from '../src/engine/pool/payload-ranges.js';
import { poolForJob } from '../src/engine/pool/crypt-pool.js';
import { mapWriteError } from '../src/engine/errors.js';
import { createImage, openImage, type WritableImage } from '../src/image/index.js';
import { nativeAddon } from '../src/native-addon.js';
import { PBKDF2_FAST, firstDifference, oracleDecryptSector, removeDir, requireStrace, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const MiB = 1 << 20;
/** The batch size of a job of at most 64 MiB when none is asked for (batchBytesForJob). */
const SMALL_JOB_BATCH = 2 * MiB;
let dir: string;

beforeAll(() => {
  dir = tempDir('vhdcrypt-batch-io-');
});
afterAll(() => removeDir(dir));

/** A raw image of `size` random bytes; returns them. */
function makeRandomRaw(path: string, size: number): Uint8Array {
  const data = new Uint8Array(randomBytes(size));
  writeFileSync(path, data);
  return data;
}

/** A raw source of `size` random bytes and a 64-byte key file for a plain volume, named after `name`. */
function plainJob(name: string, size: number): { src: string; keyFile: string } {
  const src = join(dir, `${name}-src.raw`);
  makeRandomRaw(src, size);
  const keyFile = join(dir, `${name}.key`);
  writeFileSync(keyFile, randomBytes(64));
  return { src, keyFile };
}

/**
 * A `format` source of `size` random bytes encrypted to a LUKS2 VHD by the CLI (--threads 2) under strace: its
 * pread64 and read calls on every thread, each descriptor with its file's path (-y).
 */
async function encryptTraced(name: string, format: 'vhd-fixed' | 'vhd-dynamic', size: number): Promise<{ out: string; passphraseFile: string; traced: string[] }> {
  requireStrace();
  const srcPath = join(dir, `${name}-src.vhd`);
  const src = (await createImage(srcPath, { format, virtualSize: BigInt(size) })) as WritableImage;
  await src.write(0n, new Uint8Array(randomBytes(size)));
  await src.close();
  const passphraseFile = join(dir, `${name}.pass`);
  writeFileSync(passphraseFile, 'correct horse');
  const out = join(dir, `${name}-out.vhd`);
  const trace = join(dir, `${name}-trace`);
  const cli = join(ROOT, 'bin', 'vhdcrypt.cjs');
  const r = spawnSync(
    'strace',
    ['-ff', '-qq', '-y', '-s', '0', '-e', 'trace=pread64,read', '-e', 'signal=none', '-o', trace, process.execPath, cli, 'encrypt', srcPath, out, '--format', 'luks2', '--passphrase-file', passphraseFile, '--threads', '2', '--json'],
    { encoding: 'utf8' },
  );
  expect(r.status, r.stderr).toBe(0);
  const traced = readdirSync(dir)
    .filter((f) => f.startsWith(`${name}-trace.`))
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n'));
  return { out, passphraseFile, traced };
}

describe('batches go disk -> slot -> XTS -> disk on the thread that crypts them', () => {
  it('the pipeline never calls a flat image\'s own read or write: every batch goes by its plan, on the thread that crypts it; the output is plain64 AES-XTS of the input', async () => {
    const size = 24 * MiB;
    const srcPath = join(dir, 'pipe-src.raw');
    const plain = makeRandomRaw(srcPath, size);
    const src = await openImage(srcPath, { format: 'raw' });
    const out = (await createImage(join(dir, 'pipe-out.raw'), { format: 'raw', virtualSize: BigInt(size) })) as WritableImage;
    const pool = new CryptPool({ threads: 2, backend: 'native' });
    const key = new Uint8Array(randomBytes(64));
    const job = pool.startJob(key);
    const slots = new SlotRing(pool.threads * 2 + 2, 4 * MiB);
    let mainReads = 0;
    let mainWrites = 0;
    let planned = 0;
    try {
      expect(pool.usesWorkers).toBe(true);
      const ranges = () => payloadRanges(() => src.extents(), { base: 0n, payloadSize: BigInt(size), granule: 4096n, all: true });
      await runSectorPipeline({
        pool,
        job,
        encrypt: true,
        slots,
        batches: batchesOf(ranges(), 4 * MiB),
        sectorSize: 4096,
        tweak: (off) => ({ firstTweak: off / 512n, tweakStep: 8 }),
        read: async () => {
          mainReads++;
        },
        write: async () => {
          mainWrites++;
        },
        readPlan: (off, n) => src.readPlan!(off, n),
        writePlan: (off, n) => out.writePlan!(off, n),
        wrotePlanned: (r) => {
          planned++;
          out.wrotePlanned!(r);
        },
      });
    } finally {
      await pool.endJob(job);
      await pool.destroy();
      await src.close();
      await out.close();
    }
    expect(mainReads).toBe(0);
    expect(mainWrites).toBe(0);
    expect(planned).toBe(6);
    const cipher = readFileSync(join(dir, 'pipe-out.raw'));
    expect(cipher.length).toBe(size);
    // Every sector decrypts to the input under its plain64 tweak (512-byte units, 4096-byte sectors).
    for (let o = 0; o < size; o += 4096) {
      const back = oracleDecryptSector(key, BigInt(o / 512), cipher.subarray(o, o + 4096));
      if (firstDifference(back, plain.subarray(o, o + 4096)) !== -1) throw new Error(`sector at ${o} does not decrypt to the input`);
    }
  });

  it('the calling thread\'s key schedule (it crypts batches beside the worker) is in the addon\'s registry while the job runs and gone after it, finished or aborted', async () => {
    const live = nativeAddon()!.liveKeySchedules as () => number;
    const before = live();
    const size = 32 * MiB;
    const { src, keyFile } = plainJob('lane', size);
    let most = before;
    const seen = () => void (most = Math.max(most, live()));
    await encryptImage(src, join(dir, 'lane-out.raw'), { format: 'plain', keyFile, threads: 2, backend: 'native', onProgress: seen });
    expect(most).toBe(before + 1);
    expect(live()).toBe(before);
    // Aborted at its first progress: the schedule goes with the job all the same.
    const ac = new AbortController();
    const run = encryptImage(src, join(dir, 'lane-abort.raw'), { format: 'plain', keyFile, threads: 2, backend: 'native', batchBytes: MiB, signal: ac.signal, onProgress: () => ac.abort(new Error('test abort')) });
    await expect(run).rejects.toMatchObject({ code: 'ENGINE_ABORTED' });
    expect(live()).toBe(before);
  });

  it('a CLI encrypt with --threads 2 and the native kernel: one worker and the calling thread each read, crypt and write whole batches, each batch read and written once by one thread', () => {
    requireStrace();
    const size = 16 * MiB;
    const { src, keyFile } = plainJob('cli', size);
    // One trace file per thread (-ff): TRACE.<tid>; the main thread's tid is the process id strace started.
    const trace = join(dir, 'trace');
    const cli = join(ROOT, 'bin', 'vhdcrypt.cjs');
    const r = spawnSync(
      'strace',
      ['-ff', '-qq', '-s', '0', '-e', 'trace=pread64,pwrite64,read,write', '-e', 'signal=none', '-o', trace, process.execPath, cli, 'encrypt', src, join(dir, 'cli-out.raw'), '--format', 'plain', '--key-file', keyFile, '--threads', '2', '--json'],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    const files = readdirSync(dir).filter((f) => f.startsWith('trace.'));
    const mainPid = Math.min(...files.map((f) => Number(f.slice('trace.'.length))));
    const batch = SMALL_JOB_BATCH;
    const calls = files.flatMap((f) =>
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .map((l) => /^(pread64|pwrite64|read|write)\(\d+, "[^"]*"(?:\.\.\.)?, (\d+)(?:, (\d+))?\) += (\d+)/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) >= batch)
        .map((m) => ({ tid: Number(f.slice('trace.'.length)), call: m[1]!, offset: m[3], line: m[0] })),
    );
    const reads = calls.filter((c) => c.call === 'pread64' || c.call === 'read');
    const writes = calls.filter((c) => c.call === 'pwrite64' || c.call === 'write');
    const seen = files.flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l.includes(String(batch))).map((l) => `${f}: ${l}`)).join('\n');
    expect(reads.length, seen).toBe(size / batch);
    expect(writes.length, seen).toBe(size / batch);
    // Two threads do the batches (a worker costs ~60 ms of CPU to start here: the calling thread is the second).
    expect(new Set(calls.map((c) => c.tid)), seen).toEqual(new Set([mainPid, ...calls.filter((c) => c.tid !== mainPid).map((c) => c.tid)]));
    expect(new Set(calls.map((c) => c.tid)).size, seen).toBe(2);
    expect(calls.some((c) => c.tid === mainPid), seen).toBe(true);
    // Read and written by the same thread: the batch stays in the slot it was read into.
    const offsetsBy = (cs: typeof calls) => new Map(cs.map((c) => [c.offset, c.tid]));
    const readers = offsetsBy(reads);
    for (const [offset, tid] of offsetsBy(writes)) expect(readers.get(offset)).toBe(tid);
  });

  it('a fixed VHD output\'s manifest takes its payload blocks\' tags from the workers and its LUKS header region\'s from the bytes written: nothing is read back, and verify checks every block', async () => {
    const size = 16 * MiB;
    const { out, passphraseFile, traced } = await encryptTraced('man', 'vhd-fixed', size);
    const reads = traced
      .map((l) => /^(?:pread64|read)\(\d+(?:<[^>]*>)?, "[^"]*"(?:\.\.\.)?, (\d+)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null && Number(m[1]) >= MiB);
    // The source's batches; no block of the output (header region or payload) again.
    expect(reads.map((m) => Number(m[1])).sort((a, b) => a - b)).toEqual(Array(size / SMALL_JOB_BATCH).fill(SMALL_JOB_BATCH));
    const good = await verifyImage(out, { passphraseFile, blocks: true });
    expect(good.ok, JSON.stringify(good)).toBe(true);
    // The tags are of what was written: a byte changed in the last payload block is found.
    const fd = openSync(out, 'r+');
    try {
      const at = 16 * MiB + size - 4096;
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, at);
      b[0]! ^= 1;
      writeSync(fd, b, 0, 1, at);
    } finally {
      closeSync(fd);
    }
    const bad = await verifyImage(out, { passphraseFile, blocks: true });
    expect(bad.ok).toBe(false);
    expect(JSON.stringify(bad.links)).toContain(String((16 * MiB + size) / (2 * MiB) - 1));
  });

  it('a dynamic VHD output\'s manifest takes its payload blocks\' tags (over their all-present bitmaps) from the workers: only header-region blocks are read back, and verify checks every block', async () => {
    const size = 16 * MiB;
    const { out, passphraseFile, traced } = await encryptTraced('dman', 'vhd-dynamic', size);
    const outputReads = traced
      .filter((l) => /^(?:pread64|read)\(\d+<[^>]*dman-out\.vhd[^>]*>/.test(l))
      .map((l) => /, (\d+)(?:, \d+)?\) += \d+/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null && Number(m[1]) >= MiB);
    // The LUKS2 header region is 16 MiB (8 blocks of 2 MiB), the payload 8 more: no payload block is read back.
    const payloadBlocks = size / (2 * MiB);
    expect(outputReads.length, outputReads.map((m) => m[0]).join('\n')).toBeLessThanOrEqual(16 / 2);
    expect(outputReads.length).toBeLessThan(payloadBlocks + 1);
    const good = await verifyImage(out, { passphraseFile, blocks: true });
    expect(good.ok, JSON.stringify(good)).toBe(true);
    // The tags are of what was written: a byte changed in the last allocated block's data is found.
    const img = await openImage(out);
    const last = (img as unknown as { blockCount: number }).blockCount - 1;
    const at = await (async () => {
      const sparse = img as unknown as { fileSpan(offset: bigint, length: number): number | null };
      return sparse.fileSpan(BigInt(last) * BigInt(2 * MiB) + BigInt(2 * MiB - 4096), 4096);
    })();
    await img.close();
    expect(at).not.toBeNull();
    const fd = openSync(out, 'r+');
    try {
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, at!);
      b[0]! ^= 1;
      writeSync(fd, b, 0, 1, at!);
    } finally {
      closeSync(fd);
    }
    const bad = await verifyImage(out, { passphraseFile, blocks: true });
    expect(bad.ok).toBe(false);
    expect(JSON.stringify(bad.links)).toContain(String(last));
  });

  /** The CLI under a fresh embedded vault, a source of random data, and a run of it under strace (its openat, fallocate and rename calls, in order). */
  function vaultCli(name: string, size: number) {
    const srcPath = join(dir, `${name}-src.raw`);
    makeRandomRaw(srcPath, size);
    const env = { ...process.env, VHDCRYPT_VAULT: join(dir, `${name}-vault`) };
    const cli = join(ROOT, 'bin', 'vhdcrypt.cjs');
    expect(spawnSync(process.execPath, [cli, 'vault', 'init'], { env, encoding: 'utf8' }).status).toBe(0);
    const traced = (args: string[]): string[] => {
      const trace = join(dir, `${name}-trace`);
      const r = spawnSync('strace', ['-f', '-qq', '-y', '-e', 'trace=openat,fallocate,rename', '-e', 'signal=none', '-o', trace, process.execPath, cli, ...args], { env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return readFileSync(trace, 'utf8').split('\n');
    };
    return { srcPath, env, cli, traced };
  }

  it('an encrypt with the embedded vault reserves the output\'s blocks while the key is sealed: the temp output exists before the vault is opened, its fallocate comes before the journal', () => {
    requireStrace();
    const { srcPath, traced } = vaultCli('early', 96 * MiB);
    const out = join(dir, 'early-out.raw');
    const lines = traced(['encrypt', srcPath, out, '--format', 'luks2', '--json']);
    const first = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const tempCreated = first(/openat\(.*\.early-out\.raw\.vhdcrypt-tmp", O_RDWR\|O_CREAT/);
    const vaultOpened = first(/openat\(.*early-vault\/vault\.sqlite"/);
    const reserved = first(/fallocate\(\d+<[^>]*\.early-out\.raw\.vhdcrypt-tmp>, FALLOC_FL_KEEP_SIZE/);
    const journal = first(/rename\(".*\.early-out\.raw\.vhdcrypt-journal\.new"/);
    expect(Math.min(tempCreated, vaultOpened, journal), lines.join('\n')).toBeGreaterThanOrEqual(0);
    expect(tempCreated).toBeLessThan(vaultOpened);
    // Reservation goes with direct writes (tmpfs takes them from Linux 6.6 on).
    let direct = true;
    try {
      closeSync(openSync(join(dir, 'early-probe'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT, 0o600));
    } catch {
      direct = false;
    }
    if (direct) {
      expect(reserved, lines.join('\n')).toBeGreaterThanOrEqual(0);
      expect(reserved).toBeLessThan(journal);
    }
    // The temp file holds the whole output, and the secret the job sealed unlocks it.
    expect(spawnSync('cryptsetup', ['luksDump', out], { encoding: 'utf8' }).status).toBe(0);
  });

  it('a decrypt of a LUKS image reads its layout from the header without the key: the temp output is made and reserved before the vault is opened; a failed unlock leaves nothing', () => {
    requireStrace();
    const { srcPath, env, cli, traced } = vaultCli('early-dec', 64 * MiB);
    const enc = join(dir, 'early-dec-enc.raw');
    expect(spawnSync(process.execPath, [cli, 'encrypt', srcPath, enc, '--format', 'luks2'], { env, encoding: 'utf8' }).status).toBe(0);
    const out = join(dir, 'early-dec-out.raw');
    const lines = traced(['decrypt', enc, out, '--json']);
    expect(readFileSync(out).equals(readFileSync(srcPath))).toBe(true);
    const first = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const tempCreated = first(/openat\(.*\.early-dec-out\.raw\.vhdcrypt-tmp", O_RDWR\|O_CREAT/);
    const vaultOpened = first(/openat\(.*early-dec-vault\/vault\.sqlite"/);
    const reserved = first(/fallocate\(\d+<[^>]*\.early-dec-out\.raw\.vhdcrypt-tmp>, FALLOC_FL_KEEP_SIZE/);
    const journal = first(/rename\(".*\.early-dec-out\.raw\.vhdcrypt-journal\.new"/);
    expect(Math.min(tempCreated, vaultOpened, journal), lines.join('\n')).toBeGreaterThanOrEqual(0);
    expect(tempCreated).toBeLessThan(vaultOpened);
    expect(vaultOpened).toBeLessThan(journal);
    if (reserved >= 0) expect(reserved).toBeLessThan(journal);
    // A wrong key: the output made before the unlock is gone again, and nothing is left under the destination.
    const wrong = join(dir, 'early-dec-wrong.txt');
    writeFileSync(wrong, 'not the passphrase\n');
    const bad = join(dir, 'early-dec-bad.raw');
    const f = spawnSync(process.execPath, [cli, 'decrypt', enc, bad, '--passphrase-file', wrong], { env, encoding: 'utf8' });
    expect(f.status).not.toBe(0);
    expect(f.stderr).toMatch(/LUKS_BAD_PASSPHRASE|no keyslot/i);
    expect(readdirSync(dir).filter((n) => n.includes('early-dec-bad'))).toEqual([]);
  });

  it('a worker\'s failed write comes back with its errno across the thread (ENOSPC from /dev/full), and the engine maps it to ENGINE_NO_SPACE', async () => {
    const pool = new CryptPool({ threads: 1, backend: 'native' });
    const job = pool.startJob(new Uint8Array(randomBytes(64)));
    const slots = new SlotRing(2, 64 * 1024);
    const full = openSync('/dev/full', 'w');
    try {
      const plan = { fd: full, directFd: -1, position: 0, skipZeroChunks: false };
      const batch = async function* () {
        yield { index: 0, offset: 0n, length: 64 * 1024 };
      };
      const run = runSectorPipeline({
        pool,
        job,
        encrypt: true,
        slots,
        batches: batch(),
        sectorSize: 4096,
        tweak: (off) => ({ firstTweak: off / 512n, tweakStep: 8 }),
        read: async () => undefined,
        write: async () => undefined,
        writePlan: () => plan,
        plannedIoError: (side, cause) => (side === 'write' ? mapWriteError(cause, '/dev/full') : cause),
      });
      await expect(run).rejects.toMatchObject({ code: 'ENGINE_NO_SPACE', cause: { code: 'ENOSPC', syscall: 'write' } });
    } finally {
      closeSync(full);
      await pool.endJob(job);
      await pool.destroy();
    }
  });

  it('a native job asked for one thread runs inline (no worker thread, one core\'s work); WASM keeps its worker', () => {
    const big = 1n << 30n;
    const pools = [poolForJob({ threads: 1, backend: 'native' }, big), poolForJob({ threads: 1 }, big), poolForJob({ threads: 2, backend: 'native' }, big), poolForJob({ threads: 1, backend: 'wasm' }, big), poolForJob({}, big)];
    try {
      expect(pools.map((p) => p.usesWorkers)).toEqual([false, false, true, true, true]);

    } finally {
      for (const p of pools) void p.destroy();
    }
  });

  it('wiping a slot ring zeroes every slot that was handed out', async () => {
    const ring = new SlotRing(4, 64 * 1024);
    const a = await ring.acquire();
    const b = await ring.acquire();
    a.view(a.size).fill(0xaa);
    b.view(b.size).fill(0x55);
    ring.release(a);
    const again = await ring.acquire();
    again.view(100).fill(0x11);
    ring.release(again);
    ring.release(b);
    ring.wipe();
    expect(new Uint8Array(a.buffer).some((x) => x !== 0)).toBe(false);
    // A retired ring's memory, wiped, goes to the next ring of its size (a fleet worker's next job): no fresh pages.
    const used = await ring.acquire();
    used.view(used.size).fill(0x77);
    ring.release(used);
    ring.retire();
    const next = new SlotRing(4, 64 * 1024);
    const s0 = await next.acquire();
    expect(s0.buffer).toBe(a.buffer);
    expect(new Uint8Array(s0.buffer).some((x) => x !== 0)).toBe(false);
    expect(new SlotRing(4, 64 * 1024).count).toBe(4);
  });

  it('a slot ring sits on transparent huge pages where the kernel gives them on request: 9 MiB of slots touched are at least 8 MiB more AnonHugePages', (ctx) => {
    const thp = '/sys/kernel/mm/transparent_hugepage/enabled';
    if (!existsSync(thp) || /\[never\]/.test(readFileSync(thp, 'utf8'))) ctx.skip();
    const advise = nativeAddon()?.adviseHugePages as ((v: unknown) => number) | undefined;
    expect(advise).toBeTypeOf('function');
    // Whole 2 MiB pages inside the view only; bad arguments are -1.
    expect(advise!(new Uint8Array(new ArrayBuffer(MiB)))).toBe(0);
    expect(advise!(new Uint8Array(new ArrayBuffer(6 * MiB)))).toBeGreaterThanOrEqual(2 * MiB);
    expect(advise!('x')).toBe(-1);
    expect(advise!(new Uint16Array(8))).toBe(-1);
    // In a fresh process, as a job's: there the ring's memory is a fresh mapping. (In this one, large buffers freed
    // by earlier tests have raised glibc's mmap threshold, so a ring comes from the heap, zeroed by touching it.)
    const script = `
      import { readFileSync } from 'node:fs';
      import { SlotRing } from ${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'src', 'engine', 'pool', 'slot-ring.js')).href)};
      const hugeKiB = () => Number(/AnonHugePages:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 'NaN');
      const before = hugeKiB();
      const ring = new SlotRing(3, 3 << 20);
      const slots = await Promise.all([ring.acquire(), ring.acquire(), ring.acquire()]);
      for (const s of slots) s.view(s.size).fill(1);
      process.stdout.write(String(hugeKiB() - before));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(Number(r.stdout)).toBeGreaterThanOrEqual(8 * 1024);
  });

  it('an inline job between flat images reads every batch into one slot (the pages of a second would be faulted in for nothing)', () => {
    requireStrace();
    const size = 16 * MiB;
    const { src, keyFile } = plainJob('one-slot', size);
    const trace = join(dir, 'one-slot.trace');
    // raw=pread64: the arguments as numbers, the buffer's address among them.
    const r = spawnSync(
      'strace',
      ['-f', '-qq', '-e', 'trace=pread64', '-e', 'raw=pread64', '-e', 'signal=none', '-o', trace, process.execPath, join(ROOT, 'bin', 'vhdcrypt.cjs'), 'encrypt', src, join(dir, 'one-slot.out.raw'), '--format', 'plain', '--key-file', keyFile, '--json'],
      { encoding: 'utf8' },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).threads).toBe(1);
    const batchReads = readFileSync(trace, 'utf8')
      .split('\n')
      .map((l) => /pread64\((0x[0-9a-f]+), (0x[0-9a-f]+), 0x200000, (0x[0-9a-f]+|0)\) = 0x200000/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null);
    expect(batchReads.length).toBe(size / SMALL_JOB_BATCH);
    expect(new Set(batchReads.map((m) => m[2])).size).toBe(1);
  });

  it('a small job runs inline (one thread, no worker) and round-trips to the same bytes', async () => {
    const size = 8 * MiB;
    const src = join(dir, 'small-src.raw');
    const plain = makeRandomRaw(src, size);
    const passphraseFile = join(dir, 'small.pass');
    writeFileSync(passphraseFile, 'correct horse');
    const enc = await encryptImage(src, join(dir, 'small.luks.raw'), { passphraseFile, kdf: PBKDF2_FAST });
    expect(enc.threads).toBe(1);
    const dec = await decryptImage(join(dir, 'small.luks.raw'), join(dir, 'small-back.raw'), { passphraseFile });
    expect(dec.threads).toBe(1);
    expect(firstDifference(readFileSync(join(dir, 'small-back.raw')), plain)).toBe(-1);
  });
});
