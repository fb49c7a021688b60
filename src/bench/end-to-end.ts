/**
 * The end-to-end part of `vhdcrypt bench`: the main job on the embedded
 * defaults. A temporary fixed VHD of random data is encrypted into a LUKS2
 * fixed VHD with a random keyslot passphrase sealed in the default vault, then
 * decrypted back and compared; the temporary disk's secret is deleted and
 * purged afterwards so the vault keeps nothing of the run.
 */
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decryptImage, encryptImage } from '../engine/index.js';
import { EngineError } from '../engine/errors.js';
import { createImage, openImage } from '../image/index.js';
import { openVault } from '../vault/index.js';

export interface EndToEndResult {
  readonly description: string;
  readonly seconds: number;
  readonly mbPerSecond: number;
  readonly decryptSeconds: number;
  readonly decryptMbPerSecond: number;
  readonly backend: string;
  readonly kernel: string;
  readonly threads: number;
  readonly secretId: string | null;
  readonly vaultUri: string | null;
  readonly verified: boolean;
}

const CHUNK = 4 << 20;

async function sameContent(a: string, b: string): Promise<boolean> {
  const [ia, ib] = [await openImage(a), await openImage(b)];
  try {
    if (ia.virtualSize !== ib.virtualSize) return false;
    const [ba, bb] = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
    for (let off = 0n; off < ia.virtualSize; off += BigInt(CHUNK)) {
      const n = Number(ia.virtualSize - off < BigInt(CHUNK) ? ia.virtualSize - off : BigInt(CHUNK));
      await Promise.all([ia.read(off, ba.subarray(0, n)), ib.read(off, bb.subarray(0, n))]);
      if (!Buffer.from(ba.buffer, 0, n).equals(Buffer.from(bb.buffer, 0, n))) return false;
    }
    return true;
  } finally {
    await Promise.all([ia.close(), ib.close()]);
  }
}

/** Encrypt and decrypt a temporary `sizeMiB` fixed VHD through the default vault; time both, verify the round trip. */
export async function runEndToEndBench(opts: { sizeMiB: number; vault?: string; threads?: number }): Promise<EndToEndResult> {
  if (!Number.isInteger(opts.sizeMiB) || opts.sizeMiB < 1 || opts.sizeMiB > 1 << 20) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `--size expected a whole number of MiB from 1 to 1048576, got ${opts.sizeMiB}`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'vhdcrypt-bench-'));
  try {
    const src = join(dir, 'disk.vhd');
    const img = await createImage(src, { format: 'vhd-fixed', virtualSize: BigInt(opts.sizeMiB) << 20n });
    const chunk = new Uint8Array(CHUNK);
    for (let off = 0n; off < img.virtualSize; off += BigInt(CHUNK)) {
      randomFillSync(chunk);
      await img.write(off, chunk);
    }
    await img.close();
    const enc = await encryptImage(src, join(dir, 'disk.enc.vhd'), { vault: opts.vault, threads: opts.threads });
    const dec = await decryptImage(join(dir, 'disk.enc.vhd'), join(dir, 'disk.dec.vhd'), { vault: opts.vault, threads: opts.threads });
    const verified = await sameContent(src, join(dir, 'disk.dec.vhd'));
    if (enc.secretId !== null) {
      // The secret's name is the path segment after /secrets/ in its id.
      const name = /\/secrets\/([^/]+)/.exec(enc.secretId)?.[1];
      if (name !== undefined) {
        const vault = await openVault(enc.vaultUri ?? opts.vault);
        try {
          await vault.deleteSecret(name);
          await vault.purgeDeletedSecret(name);
        } finally {
          await vault.close();
        }
      }
    }
    return {
      description: `${opts.sizeMiB} MiB fixed VHD -> LUKS2 fixed VHD (key sealed in ${enc.vaultUri ?? 'no vault'})`,
      seconds: enc.seconds,
      mbPerSecond: enc.mbPerSecond,
      decryptSeconds: dec.seconds,
      decryptMbPerSecond: dec.mbPerSecond,
      backend: enc.backend,
      kernel: enc.kernel,
      threads: enc.threads,
      secretId: enc.secretId,
      vaultUri: enc.vaultUri,
      verified,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
