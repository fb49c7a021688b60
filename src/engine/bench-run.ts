/** An end-to-end encrypt of a temporary image, for `vhdcrypt bench` and bench/engine.bench.ts. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { createImage } from '../image/index.js';
import type { BackendChoice } from '../crypto/index.js';
import { encryptImage } from './encrypt-image.js';
import type { RunResult } from './run-options.js';

export interface EndToEndBenchResult {
  readonly description: string;
  readonly seconds: number;
  readonly mbPerSecond: number;
  readonly result: RunResult;
}

/** Make a fixed VHD of `sizeMiB` random MiB in a temp dir, encrypt it into a LUKS2 fixed VHD, time it, remove both. */
export async function runEncryptBench(opts: { sizeMiB: number; threads?: number; backend?: BackendChoice; dir?: string }): Promise<EndToEndBenchResult> {
  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), 'vhdcrypt-bench-'));
  try {
    const src = join(dir, 'src.vhd');
    const img = await createImage(src, { format: 'vhd-fixed', virtualSize: BigInt(opts.sizeMiB) << 20n });
    const chunk = new Uint8Array(4 << 20);
    for (let o = 0n; o < img.virtualSize; o += BigInt(chunk.length)) {
      const n = Number(img.virtualSize - o < BigInt(chunk.length) ? img.virtualSize - o : BigInt(chunk.length));
      randomFillSync(chunk);
      await img.write(o, chunk.subarray(0, n));
    }
    await img.close();
    // A random passphrase with PBKDF2 at 1000 iterations: the run measures data, not the KDF.
    const result = await encryptImage(src, join(dir, 'out.vhd'), {
      passphrase: new Uint8Array(randomFillSync(new Uint8Array(32))),
      kdf: { type: 'pbkdf2', hash: 'sha256', iterations: 1000 },
      format: 'luks2',
      threads: opts.threads,
      backend: opts.backend,
    });
    return {
      description: `encrypt ${opts.sizeMiB} MiB fixed VHD -> LUKS2 fixed VHD, ${result.backend}/${result.kernel}, ${result.threads} threads`,
      seconds: result.seconds,
      mbPerSecond: result.mbPerSecond,
      result,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
