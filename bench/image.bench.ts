/**
 * npm run bench:image — the image layer's figures, measured in one run:
 *  1. extents() of a 2 TiB dynamic VHD with 1,000 allocated blocks (target < 200 ms), beside
 *     `qemu-img map` (whole process) on a 2040 GiB twin (qemu's vpc limit) with the same blocks;
 *  2. sequential read of a 2 GiB fixed VHD through read() in 4 MiB requests vs `dd bs=4M` of the
 *     same file to /dev/null, page cache warm for both (target >= 0.8x dd).
 * Medians of several runs, ours and the peer interleaved. Pass --json for machine-readable output.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createImage, openImage } from '../src/image/index.js';

const run = promisify(execFile);
const json = process.argv.includes('--json');
const runs = 5;
const MiB = 1 << 20;
const GiB = 1024 * MiB;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** A dynamic VHD of `size` with `blocks` allocated blocks spread evenly; only 512 bytes written per block. */
async function sparseDynamic(file: string, size: bigint, blocks: number): Promise<void> {
  const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: size });
  const total = Number(size / BigInt(2 * MiB));
  const sector = new Uint8Array(512).fill(0x5a);
  for (let i = 0; i < blocks; i++) {
    const blk = Math.floor((i * total) / blocks);
    await img.write(BigInt(blk) * BigInt(2 * MiB), sector);
  }
  await img.close();
}

const dir = await mkdtemp(path.join(tmpdir(), 'vhdcrypt-bench-image-'));
try {
  // 1. extents
  const big = path.join(dir, 'big.vhd');
  await sparseDynamic(big, 2n << 40n, 1000);
  const twin = path.join(dir, 'twin.vhd');
  await sparseDynamic(twin, 2040n * BigInt(GiB), 1000);
  const extentsMs: number[] = [];
  const openMs: number[] = [];
  const qemuMapMs: number[] = [];
  let extentCount = 0;
  for (let i = 0; i < runs; i++) {
    let img!: Awaited<ReturnType<typeof openImage>>;
    openMs.push(await timeIt(async () => (img = await openImage(big))));
    extentsMs.push(
      await timeIt(async () => {
        extentCount = 0;
        for await (const _ of img.extents()) extentCount++;
      }),
    );
    await img.close();
    qemuMapMs.push(await timeIt(() => run('qemu-img', ['map', '-f', 'vpc', '--output=json', twin], { maxBuffer: 64 << 20 })));
  }

  // 2. sequential read
  const fixed = path.join(dir, 'fixed.vhd');
  const size = 2 * GiB;
  {
    const img = await createImage(fixed, { format: 'vhd-fixed', virtualSize: BigInt(size) });
    const chunk = new Uint8Array(4 * MiB);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
    for (let o = 0; o < size; o += chunk.length) {
      chunk[0] = o / chunk.length; // no two chunks alike
      await img.write(BigInt(o), chunk);
    }
    await img.close();
  }
  const dd = () => run('dd', [`if=${fixed}`, 'of=/dev/null', 'bs=4M']);
  await dd(); // warm the page cache
  const img = await openImage(fixed);
  const buf = new Uint8Array(4 * MiB);
  const readAll = async () => {
    for (let o = 0; o < size; o += buf.length) await img.read(BigInt(o), buf);
  };
  await readAll();
  const oursMs: number[] = [];
  const ddMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    ddMs.push(await timeIt(dd));
    oursMs.push(await timeIt(readAll));
  }
  await img.close();

  const gbps = (ms: number) => size / 1e9 / (ms / 1000);
  const result = {
    runs,
    extents: {
      disk: '2 TiB dynamic VHD, 2 MiB blocks, 1000 allocated',
      extentCount,
      openMs: median(openMs),
      extentsMs: median(extentsMs),
      targetMs: 200,
      qemuImgMap2040GiBMs: median(qemuMapMs),
    },
    sequentialRead: {
      file: '2 GiB fixed VHD, page cache warm',
      oursGBps: gbps(median(oursMs)),
      ddGBps: gbps(median(ddMs)),
      ratio: median(ddMs) / median(oursMs),
      target: 0.8,
    },
  };
  if (json) {
    console.log(JSON.stringify(result, null, 2));
  } else {
    const e = result.extents;
    const r = result.sequentialRead;
    console.log(`image bench, median of ${runs} runs\n`);
    console.log('measure'.padEnd(62) + 'value'.padStart(12));
    console.log(`openImage() of the 2 TiB dynamic VHD (BAT read + checks)`.padEnd(62) + `${e.openMs.toFixed(1)} ms`.padStart(12));
    console.log(`extents() of it (${e.extentCount} extents)`.padEnd(62) + `${e.extentsMs.toFixed(1)} ms`.padStart(12));
    console.log(`qemu-img map --output=json, 2040 GiB twin (whole process)`.padEnd(62) + `${e.qemuImgMap2040GiBMs.toFixed(1)} ms`.padStart(12));
    console.log(`read() 4 MiB requests, 2 GiB fixed VHD`.padEnd(62) + `${r.oursGBps.toFixed(2)} GB/s`.padStart(12));
    console.log(`dd if=... of=/dev/null bs=4M (whole process)`.padEnd(62) + `${r.ddGBps.toFixed(2)} GB/s`.padStart(12));
    console.log('');
    console.log(`extents() < ${e.targetMs} ms: ${e.extentsMs < e.targetMs ? 'ok' : 'MISSED'}`);
    console.log(`read()/dd = ${r.ratio.toFixed(2)} (target >= ${r.target}): ${r.ratio >= r.target ? 'ok' : 'MISSED'}`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
