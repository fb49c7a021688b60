/**
 * npm run bench:engine [-- --size MiB] [--runs N] [--json] [--skip-dynamic]
 * Whole-process runs of the vhdcrypt CLI against peers measured in the same
 * run, median of N: encrypt a fixed VHD of random data into a LUKS2 fixed VHD
 * (native, default threads) vs `dd bs=4M conv=fsync` (the I/O floor) and vs
 * `qemu-img convert -O luks` (iter-time=100); decrypt likewise; wasm with 2
 * threads vs 1; peak RSS (VmHWM via /usr/bin/time -v) for this image and for a
 * 50 GiB dynamic VHD with 2 GiB allocated. Targets from issue 6 are printed
 * beside the ratios. Default size 2048 MiB; use --size 256 while developing.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createImage } from '../src/image/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const json = process.argv.includes('--json');
const sizeMiB = Number(arg('--size', '2048'));
const runs = Number(arg('--runs', '3'));
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.js');
const dir = mkdtempSync(join(arg('--dir', tmpdir()), 'vhdcrypt-engine-bench-'));
const env = { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') };

interface Timed {
  readonly seconds: number;
  readonly maxRssKiB: number;
}

/** Run a command under /usr/bin/time -v; wall time measured here, peak RSS from time's report. */
function timed(cmd: string, args: string[]): Timed {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...args], { env, encoding: 'utf8', maxBuffer: 1 << 24 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr);
  return { seconds, maxRssKiB: m ? Number(m[1]) : NaN };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function rm(...paths: string[]): void {
  for (const p of paths) rmSync(p, { force: true });
}

async function makeFixed(path: string, mib: number): Promise<void> {
  const img = await createImage(path, { format: 'vhd-fixed', virtualSize: BigInt(mib) << 20n });
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
const enc = join(dir, 'enc.vhd');
const dec = join(dir, 'dec.vhd');
const ddOut = join(dir, 'dd.out');
const qOut = join(dir, 'qemu.luks');
const qDec = join(dir, 'qemu.raw');
const rows: Record<string, { seconds: number; maxRssKiB: number }> = {};
const put = (name: string, xs: Timed[]) => {
  rows[name] = { seconds: median(xs.map((x) => x.seconds)), maxRssKiB: Math.max(...xs.map((x) => x.maxRssKiB)) };
};

try {
  await makeFixed(src, sizeMiB);
  const e: Timed[] = [], d: Timed[] = [], dd: Timed[] = [], ddDec: Timed[] = [], q: Timed[] = [], qd: Timed[] = [], w1: Timed[] = [], w2: Timed[] = [];
  for (let i = 0; i < runs; i++) {
    // Interleaved, so a noisy neighbour hits peers and us alike.
    rm(ddOut);
    dd.push(timed('dd', [`if=${src}`, `of=${ddOut}`, 'bs=4M', 'conv=fsync', 'status=none']));
    rm(enc);
    e.push(timed(process.execPath, [cli, 'encrypt', src, enc, '--format', 'luks2', '--backend', 'native', '--json']));
    rm(qOut);
    q.push(timed('qemu-img', ['convert', '-f', 'vpc', '-O', 'luks', '--object', 'secret,id=s,data=benchpass', '-o', 'key-secret=s,iter-time=100', src, qOut]));
    rm(ddOut);
    ddDec.push(timed('dd', [`if=${enc}`, `of=${ddOut}`, 'bs=4M', 'conv=fsync', 'status=none']));
    rm(dec);
    d.push(timed(process.execPath, [cli, 'decrypt', enc, dec, '--backend', 'native', '--json']));
    rm(qDec);
    qd.push(timed('qemu-img', ['convert', '--object', 'secret,id=s,data=benchpass', '--image-opts', `driver=luks,key-secret=s,file.filename=${qOut}`, '-O', 'raw', qDec]));
    rm(enc);
    w1.push(timed(process.execPath, [cli, 'encrypt', src, enc, '--backend', 'wasm', '--threads', '1', '--json']));
    rm(enc);
    w2.push(timed(process.execPath, [cli, 'encrypt', src, enc, '--backend', 'wasm', '--threads', '2', '--json']));
    rm(ddOut, dec, qDec);
  }
  rm(qOut);
  put('dd bs=4M (encrypt floor)', dd);
  put('vhdcrypt encrypt native', e);
  put('qemu-img convert -O luks', q);
  put('dd bs=4M (decrypt floor)', ddDec);
  put('vhdcrypt decrypt native', d);
  put('qemu-img convert luks -> raw', qd);
  put('vhdcrypt encrypt wasm 1 thread', w1);
  put('vhdcrypt encrypt wasm 2 threads', w2);
  rm(enc, src);
  if (!process.argv.includes('--skip-dynamic')) {
    const sparse = join(dir, 'sparse50g.vhd');
    await makeSparseDynamic(sparse);
    const s: Timed[] = [];
    for (let i = 0; i < runs; i++) {
      rm(enc);
      s.push(timed(process.execPath, [cli, 'encrypt', sparse, enc, '--backend', 'native', '--json']));
    }
    put('vhdcrypt encrypt 50 GiB dynamic, 2 GiB allocated', s);
    rm(enc, sparse);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const r = (n: string) => rows[n]!;
const ratios = {
  encryptVsDd: r('vhdcrypt encrypt native').seconds / r('dd bs=4M (encrypt floor)').seconds,
  qemuVsEncrypt: r('qemu-img convert -O luks').seconds / r('vhdcrypt encrypt native').seconds,
  decryptVsDd: r('vhdcrypt decrypt native').seconds / r('dd bs=4M (decrypt floor)').seconds,
  qemuVsDecrypt: r('qemu-img convert luks -> raw').seconds / r('vhdcrypt decrypt native').seconds,
  wasm2VsWasm1: r('vhdcrypt encrypt wasm 1 thread').seconds / r('vhdcrypt encrypt wasm 2 threads').seconds,
};
if (json) {
  process.stdout.write(JSON.stringify({ sizeMiB, runs, rows, ratios }, null, 2) + '\n');
} else {
  process.stdout.write(`engine bench: ${sizeMiB} MiB fixed VHD of random data, median of ${runs} whole-process runs\n`);
  for (const [name, v] of Object.entries(rows)) {
    const mib = name.includes('50 GiB') ? 2048 : sizeMiB; // the dynamic image: its allocated data
    process.stdout.write(`  ${name.padEnd(50)} ${v.seconds.toFixed(2).padStart(8)} s ${(mib / v.seconds).toFixed(0).padStart(6)} MiB/s  peak RSS ${(v.maxRssKiB / 1024).toFixed(0)} MiB\n`);
  }
  process.stdout.write(`  encrypt / dd            ${ratios.encryptVsDd.toFixed(2)}x   (target <= 1.25)\n`);
  process.stdout.write(`  qemu-img / encrypt      ${ratios.qemuVsEncrypt.toFixed(2)}x   (target >= 4)\n`);
  process.stdout.write(`  decrypt / dd            ${ratios.decryptVsDd.toFixed(2)}x   (target <= 1.25)\n`);
  process.stdout.write(`  qemu-img / decrypt      ${ratios.qemuVsDecrypt.toFixed(2)}x   (target >= 4)\n`);
  process.stdout.write(`  wasm 2 threads / 1      ${ratios.wasm2VsWasm1.toFixed(2)}x   (target >= 1.7)\n`);
  process.stdout.write(`  peak RSS target < 300 MiB; the 50 GiB dynamic row's MiB/s counts its 2 GiB of allocated data\n`);
}
