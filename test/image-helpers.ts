/** Shared by the image tests: temp dirs, qemu tool runners, extents as plain ranges. */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { DiskImage } from '../src/image/index.js';

const run = promisify(execFile);

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vhdcrypt-image-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Run a tool; resolves with stdout, rejects with its stderr on a non-zero exit. */
export async function tool(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await run(cmd, args, { maxBuffer: 64 << 20 });
  return stdout;
}

/** Exit status of a tool (no throw). */
export async function toolStatus(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(cmd, args, { maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

/** Merged [start, end) ranges of allocated extents. */
export async function allocatedOf(img: DiskImage): Promise<Array<[number, number]>> {
  const out: Array<[number, number]> = [];
  let expect = 0n;
  for await (const e of img.extents()) {
    if (e.offset !== expect) throw new Error(`extents not contiguous at ${e.offset}`);
    expect = e.offset + e.length;
    if (!e.allocated) continue;
    mergePush(out, Number(e.offset), Number(e.offset + e.length));
  }
  if (expect !== img.virtualSize) throw new Error(`extents end at ${expect}, disk is ${img.virtualSize}`);
  return out;
}

export function mergePush(out: Array<[number, number]>, s: number, e: number): void {
  const last = out[out.length - 1];
  if (last && last[1] >= s) last[1] = Math.max(last[1], e);
  else out.push([s, e]);
}

/** Ranges qemu-img map reports as data. */
export async function qemuDataRanges(file: string, fmt: string): Promise<Array<[number, number]>> {
  const map = JSON.parse(await tool('qemu-img', ['map', '-f', fmt, '--output=json', file])) as Array<{ start: number; length: number; data: boolean }>;
  const out: Array<[number, number]> = [];
  for (const m of map) if (m.data) mergePush(out, m.start, m.start + m.length);
  return out;
}

/** Read a whole image through our reader in `chunk`-byte requests, several in flight. */
export async function readAll(img: DiskImage, chunk = 1 << 20): Promise<Buffer> {
  const size = Number(img.virtualSize);
  const out = Buffer.alloc(size);
  const jobs: Promise<void>[] = [];
  for (let o = 0; o < size; o += chunk) jobs.push(img.read(BigInt(o), out.subarray(o, Math.min(o + chunk, size))));
  await Promise.all(jobs);
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function patternBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
