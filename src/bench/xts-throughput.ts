/**
 * XTS throughput measurement shared by `npm run bench:xts` and `vhdcrypt bench`:
 * every backend and native kernel on 1 MiB batches, node:crypto per sector (what
 * a Node user writes today) and `openssl speed` as peers in the same run.
 * Figures are medians of tinybench samples (MB = 10^6 bytes).
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Bench } from 'tinybench';
import { availableBackends, createXts } from '../crypto/index.js';

const execFileAsync = promisify(execFile);

export interface XtsThroughputRow {
  readonly name: string;        // e.g. 'native/vaes-avx512', 'node:crypto per sector', 'openssl speed'
  readonly sectorSize: number | null;
  readonly mbPerSecond: number; // median
  readonly samples: number;
}

export interface XtsThroughputOptions {
  /** Milliseconds of sampling per task (default 600). */
  timeMs?: number;
  /** Batch size in bytes (default 1 MiB). */
  batchBytes?: number;
  /** Key size in bytes: 64 = AES-256-XTS (default), 32 = AES-128-XTS. */
  keyBytes?: 32 | 64;
  /** Sector sizes to run (default 512 and 4096). */
  sectorSizes?: number[];
  /** Skip the slow JS backend. */
  skipJs?: boolean;
}

function medianMbps(bytes: number, task: { result: unknown }): { mbps: number; samples: number } {
  const r = task.result as { state?: string; latency?: { p50: number; samplesCount?: number; samples?: number[] } };
  if (!r || r.state !== 'completed' || !r.latency) throw new Error(`benchmark task did not complete (${r?.state ?? 'no result'})`);
  const samples = r.latency.samplesCount ?? r.latency.samples?.length ?? 0;
  return { mbps: bytes / 1e6 / (r.latency.p50 / 1000), samples };
}

/** Median MB/s of every backend and kernel, node:crypto per sector, in one run. */
export async function measureXtsThroughput(opts: XtsThroughputOptions = {}): Promise<XtsThroughputRow[]> {
  const time = opts.timeMs ?? 600;
  const batch = opts.batchBytes ?? 1 << 20;
  const key = randomBytes(opts.keyBytes ?? 64);
  const algo = key.length === 64 ? 'aes-256-xts' : 'aes-128-xts';
  const data = new Uint8Array(randomBytes(batch));
  const rows: XtsThroughputRow[] = [];
  for (const sectorSize of opts.sectorSizes ?? [512, 4096]) {
    const bench = new Bench({ time, warmupTime: 100 });
    const names: string[] = [];
    const disposers: Array<() => void> = [];
    for (const t of availableBackends()) {
      if (opts.skipJs && t.backend === 'js') continue;
      const xts = createXts(key, t.backend === 'native' ? { backend: 'native', kernel: t.kernel } : { backend: t.backend });
      disposers.push(() => xts.dispose());
      const name = `${t.backend}/${t.kernel}`;
      names.push(name);
      // The js backend is ~100x slower: a smaller batch keeps its samples short; MB/s is per byte anyway.
      const view = t.backend === 'js' ? data.subarray(0, Math.max(sectorSize, batch / 16)) : data;
      bench.add(name, () => xts.encryptSectors(view, 0n, sectorSize));
    }
    const iv = Buffer.alloc(16);
    const perSectorView = data.subarray(0, Math.max(sectorSize, batch / 4));
    bench.add('node:crypto per sector', () => {
      for (let off = 0, n = 0; off < perSectorView.length; off += sectorSize, n++) {
        iv.writeUInt32LE(n, 0);
        const c = createCipheriv(algo, key, iv);
        c.update(perSectorView.subarray(off, off + sectorSize));
        c.final();
      }
    });
    names.push('node:crypto per sector');
    await bench.run();
    for (const task of bench.tasks) {
      const bytes = task.name === 'node:crypto per sector' ? perSectorView.length
        : task.name.startsWith('js/') ? Math.max(sectorSize, batch / 16) : batch;
      const { mbps, samples } = medianMbps(bytes, task);
      rows.push({ name: task.name, sectorSize, mbPerSecond: mbps, samples });
    }
    for (const d of disposers) d();
  }
  key.fill(0);
  return rows;
}

/** `openssl speed -evp aes-256-xts -bytes 16384` in MB/s, or null when openssl is missing. */
export async function measureOpensslSpeed(keyBytes: 32 | 64 = 64, seconds = 2): Promise<XtsThroughputRow | null> {
  const algo = keyBytes === 64 ? 'aes-256-xts' : 'aes-128-xts';
  try {
    const { stdout } = await execFileAsync('openssl', ['speed', '-evp', algo, '-bytes', '16384', '-seconds', String(seconds)], { timeout: 60_000 });
    // Last line: "AES-256-XTS   5930450.94k" in 1000s of bytes per second.
    const m = /XTS\s+([\d.]+)k\s*$/im.exec(stdout.trim());
    if (!m) return null;
    return { name: `openssl speed -evp ${algo} -bytes 16384`, sectorSize: null, mbPerSecond: Number(m[1]) / 1000, samples: 1 };
  } catch {
    return null; // openssl absent or failed: the peer is reported as missing, not guessed
  }
}
