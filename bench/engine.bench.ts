/**
 * npm run bench:engine [-- --size MiB] [--runs N] [--json] [--skip-dynamic] [--skip-qemu] [--verbose] [--dir DIR] [--settle MS]
 * Run it once with --dir on a disk and once on tmpfs (--dir /dev/shm: it needs about 8x --size there, 10x with qemu).
 * Beside the rows below it measures the machine's own floors in the same rounds (`cp`, `dd bs=4M conv=fsync`,
 * `dd bs=4M oflag=direct`, and the latter with conv=fsync: durable at exit, as ours), the XTS kernel alone on one core, a raw and a fully allocated dynamic VHD of the same
 * size (encrypt and decrypt), native with --threads 1 and 2, the streams a backup tool pipes (createEncryptStream and
 * createDecryptStream of the dynamic VHD to /dev/null, bench/stream-run.ts, beside the same pipeline with a
 * PassThrough: the floor the caller's read stream sets; once with Node's default 64 KiB reads and once with 1 MiB
 * reads), start-up (encrypt of a 16 MiB fixed VHD
 * and `node -e 0`), and peak RSS of every row.
 * Whole-process runs of the vhdcrypt CLI against peers measured in the same
 * run, median of N rounds (each round rotates the order; every command starts
 * after sync, a short settle and warmPageAllocator, writing a fresh output file); the ratios to the floors are medians of pairs (each
 * encrypt and decrypt run is followed at once by `cp` on tmpfs, by both `dd`s on a disk, and divided by it): encrypt a fixed VHD of random data into a LUKS2 fixed VHD
 * (native, default threads) vs `dd bs=4M conv=fsync` (the issue's I/O floor; our output goes with
 * O_DIRECT, so `dd oflag=direct` is run too, as a reference without a target) and vs
 * qemu-img writing the same disk through its luks driver into a LUKS1 volume that cryptsetup formatted once with fixed
 * PBKDF2 iterations (`qemu-img convert -O luks` sizes its KDF by `iter-time`, a benchmark against the clock that
 * fails with "Unable to get accurate CPU usage" on these VMs; its KDF is therefore not in the peer's time, which
 * favours the peer); decrypt likewise, with qemu-img run twice: as is (its target
 * cache mode ignores flushes, so its output is still in the page cache when it exits) and with `-t writeback`
 * (one fdatasync at exit: on disk, as ours and the dd floor's); wasm with 2
 * threads vs 1 (throughput as the tool reports it, and whole-process wall time); peak RSS (VmHWM via /usr/bin/time -v) for this image and for a
 * 50 GiB dynamic VHD with 2 GiB allocated. Targets are printed
 * beside the ratios. Default size 2048 MiB; use --size 256 while developing.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { statfsSync } from 'node:fs';
import { createImage } from '../src/image/index.js';
import { encryptImage } from '../src/engine/index.js';
import { measureXtsThroughput } from '../src/bench/xts-throughput.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const json = process.argv.includes('--json');
const verbose = process.argv.includes('--verbose');
const sizeMiB = Number(arg('--size', '2048'));
const runs = Number(arg('--runs', '5'));
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.cjs');
const streamRun = join(root, 'dist', 'bench', 'stream-run.js');
const dir = mkdtempSync(join(arg('--dir', tmpdir()), 'vhdcrypt-engine-bench-'));
// NODE_EXTRA_CA_CERTS makes every Node process parse that CA bundle before any script runs (these VMs set it
// to the whole system bundle: `node -e 0` 0.10 s instead of 0.03 s). The local vault makes no TLS connection,
// so the commands run without it; its cost is measured each round and printed (nodeStartCaSeconds).
const { NODE_EXTRA_CA_CERTS: extraCaCerts, ...callerEnv } = process.env;
const env: NodeJS.ProcessEnv = { ...callerEnv, VHDCRYPT_VAULT: join(dir, 'vault') };

interface Timed {
  readonly seconds: number;
  readonly maxRssKiB: number;
  /** The job's own time from a vhdcrypt --json summary (its throughput's denominator), else NaN. */
  readonly jobSeconds: number;
  /** Of the job, the pass over the payload alone (its --json dataSeconds), else NaN. */
  readonly dataSeconds: number;
}

/** Run a command under /usr/bin/time -v; wall time measured here, peak RSS from time's report. */
function timed(cmd: string, args: string[], withEnv: NodeJS.ProcessEnv = env): Timed {
  // Start every command with no dirty pages left by the previous one, so no
  // command pays for another's writeback (qemu-img does not fsync its output).
  spawnSync('sync');
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...args], { env: withEnv, encoding: 'utf8', maxBuffer: 1 << 24 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  if (verbose) process.stderr.write(`${seconds.toFixed(2)} s  ${cmd === process.execPath ? 'vhdcrypt' : cmd} (own ${/"seconds": ([\d.]+)/.exec(r.stdout)?.[1] ?? '-'} s) ${args.join(' ').slice(0, 90)}\n`);
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  const job = /"seconds": ([\d.]+)/.exec(r.stdout);
  const data = /"dataSeconds": ([\d.]+)/.exec(r.stdout);
  return { seconds, maxRssKiB: m ? Number(m[1]) : NaN, jobSeconds: job ? Number(job[1]) : NaN, dataSeconds: data ? Number(data[1]) : NaN };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function rm(...paths: string[]): void {
  for (const p of paths) rmSync(p, { force: true });
}

/**
 * Hand the next command memory the machine has just used: write `bytes` of zeros into a file on /dev/shm and remove
 * it. On a VM with free page reporting (a virtio balloon; seen on these: "Free page reporting enabled" in dmesg), a
 * page left free for ~2 s goes back to the host, and the guest's next touch of it costs ~1-2 s per GiB (`cp` of
 * 1 GiB on tmpfs 0.36-2.33 s by how long the memory had been free); the allocator hands out the pages freed last
 * first, so each run, ours and the floors alike, gets memory the guest holds. 1.5x the image left one run in five
 * slow (the write copy into tmpfs pages the host had taken back); 3x left none in 12.
 */
function warmPageAllocator(bytes: number): void {
  const shm = '/dev/shm';
  try {
    const fs = statfsSync(shm);
    if (fs.type !== 0x01021994) return;
    // Leave the bench's own files room on a /dev/shm they share.
    bytes = Math.min(bytes, fs.bavail * fs.bsize - (1 << 30));
  } catch {
    return;
  }
  const file = join(shm, `.vhdcrypt-bench-warm-${process.pid}`);
  const zeros = new Uint8Array(4 << 20);
  const fd = openSync(file, 'w', 0o600);
  try {
    for (let done = 0; done < bytes; done += zeros.length) writeSync(fd, zeros);
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
}

function mustRun(cmd: string, args: readonly string[], input?: string): void {
  const r = spawnSync(cmd, args, { env: { ...env, PATH: `/usr/sbin:/sbin:${env.PATH ?? ''}` }, input, stdio: ['pipe', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${String(r.status)})`);
}

/** A LUKS1 aes-xts-plain64 volume of `mib` MiB of payload, keyslot 0 "benchpass" with PBKDF2-SHA256 1000 iterations. */
function formatLuks1(path: string, mib: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, (2 + mib) * 1024 * 1024); // cryptsetup's LUKS1 data offset is 2 MiB
  } finally {
    closeSync(fd);
  }
  mustRun('cryptsetup', ['--batch-mode', 'luksFormat', '--type', 'luks1', '--cipher', 'aes-xts-plain64', '--key-size', '512', '--hash', 'sha256', '--pbkdf-force-iterations', '1000', '--key-file', '-', path], 'benchpass');
}

/** qemu-img encrypting the source disk through its luks driver into the volume at `target`. */
function qemuEncryptArgs(target: string): string[] {
  return ['convert', '-n', '-f', 'vpc', '--object', 'secret,id=s,data=benchpass', src, '--target-image-opts', `driver=luks,key-secret=s,file.filename=${target}`];
}

async function makeFixed(path: string, mib: number, format: 'vhd-fixed' | 'vhd-dynamic' | 'raw' = 'vhd-fixed'): Promise<void> {
  const img = await createImage(path, { format, virtualSize: BigInt(mib) << 20n });
  const chunk = new Uint8Array(4 << 20);
  for (let o = 0n; o < img.virtualSize; o += BigInt(chunk.length)) {
    randomFillSync(chunk);
    await img.write(o, chunk);
  }
  await img.close();
}

/** 50 GiB dynamic VHD with 1024 random 2 MiB blocks spread over it (2 GiB allocated). */
async function makeSparseDynamic(path: string): Promise<void> {
  const img = await createImage(path, { format: 'vhd-dynamic', virtualSize: 50n << 30n });
  const block = new Uint8Array(2 << 20);
  const blocks = Number((50n << 30n) / (2n << 20n));
  for (let k = 0; k < 1024; k++) {
    randomFillSync(block);
    await img.write(BigInt(Math.floor((k * blocks) / 1024)) * (2n << 20n), block);
  }
  await img.close();
}

const src = join(dir, 'src.vhd');
const srcRaw = join(dir, 'src.raw');
const srcDyn = join(dir, 'src-dynamic.vhd');
const small = join(dir, 'small.vhd');
const rawSeed = join(dir, 'seed.luks.raw');
const dynSeed = join(dir, 'seed.luks-dynamic.vhd');
const skipQemu = process.argv.includes('--skip-qemu');
let xtsPerCore: number | null = null;
let fsType = '';
const encSeed = join(dir, 'seed.luks.vhd');
const qSeed = join(dir, 'seed.qemu.luks');
const qTarget = join(dir, 'target.qemu.luks');
const out = join(dir, 'out');
const rows: Record<string, { seconds: number; maxRssKiB: number; runs: number[]; jobSeconds: number; dataSeconds: number }> = {};
const caCost: number[] = [];
const settleMs = Number(arg('--settle', '1500'));
/** What each run is handed of memory just used (warmPageAllocator): its output and its own heap, with room. */
const warmBytes = (sizeMiB * 3 + 256) * 1048576;

interface Step {
  readonly name: string;
  readonly cmd: string;
  readonly args: readonly string[];
  /** The floors run right after each of this step's runs, so that each ratio to them is a pair's (drift falls on both). */
  readonly pairedWith?: readonly string[];
}
/** Before every timed run: no output left, the disk settled, memory the guest holds (warmPageAllocator). */
async function beforeRun(): Promise<void> {
  rm(out);
  await new Promise((r) => setTimeout(r, settleMs));
  warmPageAllocator(warmBytes);
}
/** Per ratio row: each round's run of the row and, right after it, of each floor it is paired with. */
const pairs = new Map<string, { ours: number; refs: Map<string, number> }[]>();

try {
  // statfs f_type: 0x01021994 is tmpfs.
  fsType = statfsSync(dir).type === 0x01021994 ? 'tmpfs' : `f_type 0x${statfsSync(dir).type.toString(16)}`;
  await makeFixed(src, sizeMiB);
  await makeFixed(srcRaw, sizeMiB, 'raw');
  await makeFixed(srcDyn, sizeMiB, 'vhd-dynamic');
  await makeFixed(small, 16);
  // The bench's own vault: only `vault init` creates one outside the default location.
  const init = spawnSync(process.execPath, [cli, 'vault', 'init'], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  if (init.status !== 0) throw new Error(`vhdcrypt vault init failed (${String(init.status)})`);
  // Inputs of the decrypt rows, made once: our LUKS2 images of each container and qemu's LUKS1 image of the same data.
  spawnSync(process.execPath, [cli, 'encrypt', src, encSeed, '--format', 'luks2', '--backend', 'native'], { env, stdio: 'inherit' });
  spawnSync(process.execPath, [cli, 'encrypt', srcRaw, rawSeed, '--format', 'luks2', '--backend', 'native'], { env, stdio: 'inherit' });
  // The stream rows' decrypt input: a passphrase keyslot, as the stream runner opens it.
  const pass = join(dir, 'pass');
  writeFileSync(pass, 'benchpass');
  await encryptImage(srcDyn, dynSeed, { format: 'luks2', passphrase: 'benchpass', kdf: { type: 'pbkdf2', hash: 'sha256', iterations: 1000 } });
  if (!skipQemu) {
    formatLuks1(qSeed, sizeMiB);
    formatLuks1(qTarget, sizeMiB);
    mustRun('qemu-img', qemuEncryptArgs(qSeed));
  }
  // The kernel alone, one core, 4096-byte sectors in 1 MiB batches: the crypto's own ceiling.
  const kernels = await measureXtsThroughput({ sectorSizes: [4096], skipJs: true, timeMs: 400 });
  xtsPerCore = Math.max(...kernels.filter((k) => k.name.startsWith('native/')).map((k) => k.mbPerSecond));
  const dd = (from: string): Step['args'] => [`if=${from}`, `of=${out}`, 'bs=4M', 'conv=fsync', 'status=none'];
  const enc = (from: string, ...more: string[]): string[] => [cli, 'encrypt', from, out, '--format', 'luks2', '--backend', 'native', '--json', ...more];
  const dec = (from: string, ...more: string[]): string[] => [cli, 'decrypt', from, out, '--backend', 'native', '--json', ...more];
  // The ratio rows, each paired with its floors: `cp` in memory, the two `dd`s on a disk.
  const floors = fsType === 'tmpfs' ? ['cp (floor)'] : ['dd bs=4M (encrypt floor)', 'dd bs=4M oflag=direct (reference)'];
  const steps: Step[] = [
    { name: 'cp (floor)', cmd: 'cp', args: [src, out] },
    { name: 'dd bs=4M (encrypt floor)', cmd: 'dd', args: dd(src) },
    { name: 'dd bs=4M oflag=direct (reference)', cmd: 'dd', args: [...dd(src).slice(0, -1), 'oflag=direct', 'status=none'] },
    // The same with the device's cache flushed at the end, as every run of ours ends (durable before the rename):
    // oflag=direct alone leaves the data in the disk's write cache.
    { name: 'dd bs=4M oflag=direct conv=fsync (durable)', cmd: 'dd', args: [...dd(src).slice(0, -1), 'oflag=direct', 'conv=fsync', 'status=none'] },
    { name: 'vhdcrypt encrypt native', cmd: process.execPath, args: enc(src), pairedWith: floors },
    { name: 'vhdcrypt encrypt native 1 thread', cmd: process.execPath, args: enc(src, '--threads', '1') },
    { name: 'vhdcrypt encrypt native 2 threads', cmd: process.execPath, args: enc(src, '--threads', '2') },
    { name: 'vhdcrypt encrypt raw', cmd: process.execPath, args: enc(srcRaw), pairedWith: floors },
    { name: 'vhdcrypt encrypt dynamic', cmd: process.execPath, args: enc(srcDyn), pairedWith: floors },
    { name: 'dd bs=4M (decrypt floor)', cmd: 'dd', args: dd(encSeed) },
    { name: 'vhdcrypt decrypt native', cmd: process.execPath, args: dec(encSeed), pairedWith: floors },
    { name: 'vhdcrypt decrypt raw', cmd: process.execPath, args: dec(rawSeed), pairedWith: floors },
    { name: 'vhdcrypt decrypt dynamic', cmd: process.execPath, args: dec(dynSeed, '--passphrase-file', pass), pairedWith: floors },
    { name: 'createEncryptStream dynamic -> /dev/null', cmd: process.execPath, args: [streamRun, 'encrypt', srcDyn] },
    { name: 'createDecryptStream dynamic -> /dev/null', cmd: process.execPath, args: [streamRun, 'decrypt', dynSeed] },
    { name: 'stream floor: PassThrough -> /dev/null', cmd: process.execPath, args: [streamRun, 'pass', srcDyn] },
    { name: 'createEncryptStream dynamic, 1 MiB reads', cmd: process.execPath, args: [streamRun, 'encrypt', srcDyn, '--chunk', String(1 << 20)] },
    { name: 'createDecryptStream dynamic, 1 MiB reads', cmd: process.execPath, args: [streamRun, 'decrypt', dynSeed, '--chunk', String(1 << 20)] },
    { name: 'stream floor, 1 MiB reads: PassThrough', cmd: process.execPath, args: [streamRun, 'pass', srcDyn, '--chunk', String(1 << 20)] },
    { name: 'start-up: encrypt 16 MiB fixed VHD', cmd: process.execPath, args: enc(small) },
    { name: 'start-up: node -e 0', cmd: process.execPath, args: ['-e', '0'] },
    // A first run on a machine, before the CLI has V8's code cache of its bundle (src/cli/compile-cache.ts).
    { name: 'start-up without the code cache', cmd: 'env', args: ['NODE_DISABLE_COMPILE_CACHE=1', process.execPath, ...enc(small)] },
    { name: 'vhdcrypt encrypt wasm 1 thread', cmd: process.execPath, args: [cli, 'encrypt', src, out, '--backend', 'wasm', '--threads', '1', '--json'] },
    { name: 'vhdcrypt encrypt wasm 2 threads', cmd: process.execPath, args: [cli, 'encrypt', src, out, '--backend', 'wasm', '--threads', '2', '--json'] },
  ];
  if (!skipQemu) {
    steps.push(
      { name: 'qemu-img convert into LUKS1', cmd: 'qemu-img', args: qemuEncryptArgs(qTarget) },
      { name: 'qemu-img convert luks -> raw', cmd: 'qemu-img', args: ['convert', '--object', 'secret,id=s,data=benchpass', '--image-opts', `driver=luks,key-secret=s,file.filename=${qSeed}`, '-O', 'raw', out] },
      // The same with its output on disk when it exits, as ours and the dd floor (conv=fsync): qemu-img convert's
      // default cache mode for the target ignores flushes, so without -t writeback it leaves its output in dirty pages.
      { name: 'qemu-img convert luks -> raw -t writeback', cmd: 'qemu-img', args: ['convert', '-t', 'writeback', '--object', 'secret,id=s,data=benchpass', '--image-opts', `driver=luks,key-secret=s,file.filename=${qSeed}`, '-O', 'raw', out] },
    );
  }
  if (!process.argv.includes('--skip-dynamic')) {
    const sparse = join(dir, 'sparse50g.vhd');
    await makeSparseDynamic(sparse);
    steps.push({ name: 'vhdcrypt encrypt 50 GiB dynamic, 2 GiB allocated', cmd: process.execPath, args: [cli, 'encrypt', sparse, out, '--backend', 'native', '--json'] });
  }
  const times = new Map<string, Timed[]>(steps.map((st) => [st.name, []]));
  for (let i = 0; i < runs; i++) {
    // Each round starts one step later, so no command always runs right after
    // the same neighbour's write burst (this VM's disk slows after one).
    for (let k = 0; k < steps.length; k++) {
      const st = steps[(i + k) % steps.length]!;
      await beforeRun();
      const ours = timed(st.cmd, [...st.args]);
      times.get(st.name)!.push(ours);
      if (st.pairedWith) {
        const refs = new Map<string, number>();
        for (const name of st.pairedWith) {
          const ref = steps.find((x) => x.name === name)!;
          await beforeRun();
          refs.set(name, timed(ref.cmd, [...ref.args]).seconds);
        }
        pairs.set(st.name, [...(pairs.get(st.name) ?? []), { ours: ours.seconds, refs }]);
      }
    }
    if (extraCaCerts !== undefined) {
      const bare = Math.min(...[0, 1, 2].map(() => timed(process.execPath, ['-e', '0']).seconds));
      const withCa = Math.min(...[0, 1, 2].map(() => timed(process.execPath, ['-e', '0'], { ...env, NODE_EXTRA_CA_CERTS: extraCaCerts }).seconds));
      caCost.push(withCa - bare);
    }
  }
  rm(out);
  for (const st of steps) {
    const xs = times.get(st.name)!;
    rows[st.name] = {
      seconds: median(xs.map((x) => x.seconds)),
      maxRssKiB: Math.max(...xs.map((x) => x.maxRssKiB)),
      runs: xs.map((x) => Number(x.seconds.toFixed(3))),
      jobSeconds: median(xs.map((x) => x.jobSeconds)),
      dataSeconds: median(xs.map((x) => x.dataSeconds)),
    };
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const r = (n: string) => rows[n]!;
/**
 * The median over the rounds of a row's run over the faster of the floors named (of those it was paired with, each
 * run right after it); without pairs (that floor not paired on this file system), the ratio of the two medians.
 */
function pairRatio(n: string, floorNames: readonly string[]): number {
  const ps = (pairs.get(n) ?? []).filter((p) => floorNames.every((f) => p.refs.has(f)));
  if (ps.length === 0) return r(n).seconds / Math.min(...floorNames.map((f) => r(f).seconds));
  return median(ps.map((p) => p.ours / Math.min(...floorNames.map((f) => p.refs.get(f)!))));
}
const cpFloor = ['cp (floor)'];
const ddFloors = ['dd bs=4M (encrypt floor)', 'dd bs=4M oflag=direct (reference)'];
const has = (n: string) => rows[n] !== undefined;
const gib = sizeMiB / 1024;
const ratios = {
  encryptVsCp: pairRatio('vhdcrypt encrypt native', cpFloor),
  decryptVsCp: pairRatio('vhdcrypt decrypt native', cpFloor),
  rawEncryptVsCp: pairRatio('vhdcrypt encrypt raw', cpFloor),
  rawDecryptVsCp: pairRatio('vhdcrypt decrypt raw', cpFloor),
  encryptVsDdBest: pairRatio('vhdcrypt encrypt native', ddFloors),
  decryptVsDdBest: pairRatio('vhdcrypt decrypt native', ddFloors),
  dynamicEncryptVsDdBest: pairRatio('vhdcrypt encrypt dynamic', ddFloors),
  dynamicDecryptVsDdBest: pairRatio('vhdcrypt decrypt dynamic', ddFloors),
  encryptVsDd: r('vhdcrypt encrypt native').seconds / r('dd bs=4M (encrypt floor)').seconds,
  encryptVsDdDurableDirect: r('vhdcrypt encrypt native').seconds / r('dd bs=4M oflag=direct conv=fsync (durable)').seconds,
  decryptVsDdDurableDirect: r('vhdcrypt decrypt native').seconds / r('dd bs=4M oflag=direct conv=fsync (durable)').seconds,
  decryptVsDd: r('vhdcrypt decrypt native').seconds / r('dd bs=4M (decrypt floor)').seconds,
  native2VsNative1: r('vhdcrypt encrypt native 1 thread').seconds / r('vhdcrypt encrypt native 2 threads').seconds,
  wasm2VsWasm1: r('vhdcrypt encrypt wasm 1 thread').seconds / r('vhdcrypt encrypt wasm 2 threads').seconds,
  // Throughput as the tool reports it (bytes / the job's own seconds): the process's start-up left out.
  wasm2VsWasm1Throughput: r('vhdcrypt encrypt wasm 1 thread').jobSeconds / r('vhdcrypt encrypt wasm 2 threads').jobSeconds,
  qemuVsEncrypt: has('qemu-img convert into LUKS1') ? r('qemu-img convert into LUKS1').seconds / r('vhdcrypt encrypt native').seconds : null,
  qemuVsDecrypt: has('qemu-img convert luks -> raw') ? r('qemu-img convert luks -> raw').seconds / r('vhdcrypt decrypt native').seconds : null,
  qemuDurableVsDecrypt: has('qemu-img convert luks -> raw -t writeback') ? r('qemu-img convert luks -> raw -t writeback').seconds / r('vhdcrypt decrypt native').seconds : null,
};
/** GB/s (10^9 bytes) of the whole job as the tool reports it (its --json seconds), or of a stream's pipeline. */
const jobGBps = (n: string) => (sizeMiB * 1048576) / 1e9 / r(n).jobSeconds;
/** GB/s of the pass over the payload alone (--json dataSeconds: after the set-up and the output's reservation). */
const passGBps = (n: string) => (sizeMiB * 1048576) / 1e9 / r(n).dataSeconds;
const figures = {
  dataPhaseEncryptGBps: passGBps('vhdcrypt encrypt native'),
  dataPhaseDecryptGBps: passGBps('vhdcrypt decrypt native'),
  jobEncryptGBps: jobGBps('vhdcrypt encrypt native'),
  jobDecryptGBps: jobGBps('vhdcrypt decrypt native'),
  streamEncryptGBps: jobGBps('createEncryptStream dynamic -> /dev/null'),
  streamDecryptGBps: jobGBps('createDecryptStream dynamic -> /dev/null'),
  streamFloorGBps: jobGBps('stream floor: PassThrough -> /dev/null'),
  stream1MiBEncryptGBps: jobGBps('createEncryptStream dynamic, 1 MiB reads'),
  stream1MiBDecryptGBps: jobGBps('createDecryptStream dynamic, 1 MiB reads'),
  stream1MiBFloorGBps: jobGBps('stream floor, 1 MiB reads: PassThrough'),
  startupSeconds: r('start-up: encrypt 16 MiB fixed VHD').seconds,
  nodeSeconds: r('start-up: node -e 0').seconds,
  startupUncachedSeconds: r('start-up without the code cache').seconds,
  xtsKernelPerCoreGBps: xtsPerCore === null ? null : xtsPerCore / 1000,
  peakRssMiB: Math.max(...Object.values(rows).map((v) => v.maxRssKiB)) / 1024,
};
const nodeStartCaSeconds = caCost.length > 0 ? median(caCost) : null;
if (json) {
  const pairRuns = Object.fromEntries([...pairs].map(([n, ps]) => [n, ps.map((p) => ({ ours: p.ours, ...Object.fromEntries(p.refs) }))]));
  process.stdout.write(JSON.stringify({ sizeMiB, runs, fsType, rows, ratios, figures, pairRuns, nodeStartCaSeconds }, null, 2) + '\n');
} else {
  const x = (v: number | null) => (v === null ? '-' : `${v.toFixed(2)}x`);
  process.stdout.write(`engine bench: ${sizeMiB} MiB images of random data in ${dir.replace(/[^/]*$/, '')} (${fsType}), median of ${runs} rounds of whole-process runs, order rotated each round\n`);
  for (const [name, v] of Object.entries(rows)) {
    const mib = name.includes('50 GiB') ? 2048 : name.startsWith('start-up') ? 16 : sizeMiB; // the dynamic image: its allocated data
    const own = Number.isFinite(v.jobSeconds) ? ` (own ${v.jobSeconds.toFixed(2)} s${Number.isFinite(v.dataSeconds) ? `, data ${v.dataSeconds.toFixed(2)} s` : ''})` : '';
    process.stdout.write(`  ${name.padEnd(50)} ${v.seconds.toFixed(2).padStart(8)} s${own} ${(mib / v.seconds).toFixed(0).padStart(6)} MiB/s  peak RSS ${(v.maxRssKiB / 1024).toFixed(0)} MiB  runs ${v.runs.map((t) => t.toFixed(2)).join(' ')}\n`);
  }
  process.stdout.write(`  floors of this machine: cp ${r('cp (floor)').seconds.toFixed(2)} s, dd conv=fsync ${r('dd bs=4M (encrypt floor)').seconds.toFixed(2)} s, dd oflag=direct ${r('dd bs=4M oflag=direct (reference)').seconds.toFixed(2)} s (with conv=fsync ${r('dd bs=4M oflag=direct conv=fsync (durable)').seconds.toFixed(2)} s) for ${gib} GiB; XTS kernel alone ${figures.xtsKernelPerCoreGBps?.toFixed(1) ?? '-'} GB/s per core\n`);
  const paired = fsType === 'tmpfs' ? 'median of pairs, each run followed by a cp' : 'medians; cp paired on tmpfs only';
  const pairedDd = fsType === 'tmpfs' ? 'medians; dd paired on disks only' : 'median of pairs, each run followed by both dd';
  process.stdout.write(`  encrypt / cp            ${x(ratios.encryptVsCp)} fixed, ${x(ratios.rawEncryptVsCp)} raw   (target <= 1.6 on tmpfs; ${paired})\n`);
  process.stdout.write(`  decrypt / cp            ${x(ratios.decryptVsCp)} fixed, ${x(ratios.rawDecryptVsCp)} raw   (target <= 1.6 on tmpfs; ${paired})\n`);
  process.stdout.write(`  data phase              encrypt ${figures.dataPhaseEncryptGBps.toFixed(2)} GB/s, decrypt ${figures.dataPhaseDecryptGBps.toFixed(2)} GB/s   (target >= 2.5 on tmpfs; --json dataSeconds)\n`);
  process.stdout.write(`  whole job               encrypt ${figures.jobEncryptGBps.toFixed(2)} GB/s, decrypt ${figures.jobDecryptGBps.toFixed(2)} GB/s   (--json seconds: set-up, vault, header, reservation, data, commit)\n`);
  process.stdout.write(`  / faster dd             encrypt ${x(ratios.encryptVsDdBest)} fixed, ${x(ratios.dynamicEncryptVsDdBest)} dynamic; decrypt ${x(ratios.decryptVsDdBest)} fixed, ${x(ratios.dynamicDecryptVsDdBest)} dynamic   (target <= 1.15 on disk; ${pairedDd})\n`);
  process.stdout.write(`  / durable direct dd     encrypt ${x(ratios.encryptVsDdDurableDirect)} fixed; decrypt ${x(ratios.decryptVsDdDurableDirect)} fixed   (dd oflag=direct conv=fsync: both outputs on the medium at exit)\n`);
  process.stdout.write(`  native 2 threads / 1    ${x(ratios.native2VsNative1)}   (target >= 1.0)\n`);
  process.stdout.write(`  wasm 2 threads / 1      ${x(ratios.wasm2VsWasm1Throughput)} throughput as reported, ${x(ratios.wasm2VsWasm1)} whole processes   (target > 1)\n`);
  process.stdout.write(`  streams                 encrypt ${figures.streamEncryptGBps.toFixed(2)} GB/s, decrypt ${figures.streamDecryptGBps.toFixed(2)} GB/s; the same pipeline with a PassThrough ${figures.streamFloorGBps.toFixed(2)} GB/s   (target >= 2; Node's 64 KiB reads)\n`);
  process.stdout.write(`  streams, 1 MiB reads    encrypt ${figures.stream1MiBEncryptGBps.toFixed(2)} GB/s, decrypt ${figures.stream1MiBDecryptGBps.toFixed(2)} GB/s; PassThrough ${figures.stream1MiBFloorGBps.toFixed(2)} GB/s   (target >= 2)\n`);
  process.stdout.write(`  start-up                16 MiB encrypt ${figures.startupSeconds.toFixed(3)} s, of which Node alone ${figures.nodeSeconds.toFixed(3)} s; a first run (no code cache yet) ${figures.startupUncachedSeconds.toFixed(3)} s   (target < 0.25)\n`);
  process.stdout.write(`  peak RSS                ${figures.peakRssMiB.toFixed(0)} MiB   (target < 300)\n`);
  if (ratios.qemuVsEncrypt !== null) {
    process.stdout.write(`  qemu-img / encrypt      ${x(ratios.qemuVsEncrypt)}; / decrypt ${x(ratios.qemuVsDecrypt)} (its output still in the page cache at exit), -t writeback ${x(ratios.qemuDurableVsDecrypt)}\n`);
  }
  if (nodeStartCaSeconds !== null) {
    process.stdout.write(`  NODE_EXTRA_CA_CERTS is set in this shell: removed for these runs; it adds ${nodeStartCaSeconds.toFixed(3)} s to every Node start (median)\n`);
  }
}
