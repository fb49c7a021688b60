/**
 * A disk's BitLocker volumes opened with one key, and the disk's decrypted view: reads outside the BitLocker
 * volumes pass through, reads inside them are decrypted (what `vhdcrypt serve` exports, read-only).
 */
import { openVault } from '../vault/index.js';
import { BitlockerError } from './errors.js';
import type { Protector } from './keys.js';
import type { VolumeBytes } from './metadata.js';
import { partitionBytes, readDiskLayout, type DiskLayout, type Partition } from './partitions.js';
import { bekFromVault } from './vault-bek.js';
import { BitlockerVolume } from './volume.js';
import type { BackendChoice } from '../crypto/index.js';

/** Where a BitLocker key comes from: a protector, or an Azure Disk Encryption BEK secret in a vault. */
export interface BitlockerKeyOptions {
  readonly protector?: Protector;
  /** A vault secret holding the startup key (contentType "BEK" or "Wrapped BEK"). */
  readonly bekSecret?: string;
  readonly vault?: string;
  readonly vaultCredentials?: unknown;
}

/** The protector the options name, fetching an Azure Disk Encryption BEK secret when one is named (its bytes are the caller's to wipe). */
export async function resolveProtector(opts: BitlockerKeyOptions): Promise<Protector> {
  if (opts.bekSecret !== undefined) {
    if (opts.protector !== undefined) throw new BitlockerError('BITLK_BAD_ARGUMENT', 'give either a BEK secret or another key, not both');
    const vault = await openVault(opts.vault, { ...((opts.vaultCredentials ?? {}) as object), create: false });
    try {
      return { kind: 'startup-key', bek: await bekFromVault(vault, opts.bekSecret) };
    } finally {
      await vault.close();
    }
  }
  return opts.protector ?? { kind: 'clear-key' };
}

/** The disk image as the view needs it (the image layer's DiskImage has this shape). */
export interface DiskSource {
  readonly path: string;
  readonly format: string;
  readonly virtualSize: bigint;
  readonly blockSize?: number;
  extents(): AsyncIterable<{ offset: bigint; length: bigint; allocated: boolean }>;
  read(offset: bigint, into: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export function diskBytes(image: DiskSource): VolumeBytes {
  return { size: image.virtualSize, read: (o, b) => image.read(o, b) };
}

export interface OpenedDisk {
  readonly layout: DiskLayout;
  readonly volumes: readonly { readonly part: Partition; readonly vol: BitlockerVolume }[];
}

/** Open every BitLocker volume of a disk with one protector; a disk with none is an error, and so is any volume that refuses. */
export async function openDiskVolumes(image: DiskSource, protector: Protector, backend?: BackendChoice): Promise<OpenedDisk> {
  const disk = diskBytes(image);
  const layout = await readDiskLayout(disk);
  const parts = layout.partitions.filter((p) => p.bitlocker);
  if (parts.length === 0) {
    throw new BitlockerError('BITLK_BAD_HEADER', `${image.path}: no BitLocker volume on this disk (${layout.scheme === 'none' ? 'no partition table' : `${layout.scheme}, ${layout.partitions.length} partitions`})`);
  }
  const volumes: { part: Partition; vol: BitlockerVolume }[] = [];
  try {
    for (const part of parts) volumes.push({ part, vol: await BitlockerVolume.open(partitionBytes(disk, part), protector, backend ? { backend } : {}) });
  } catch (e) {
    for (const v of volumes) v.vol.dispose();
    throw e;
  }
  return { layout, volumes };
}

/** The decrypted disk, read-only: what a plaintext export serves. close() wipes the keys and closes the image. */
export function decryptedDisk(image: DiskSource, opened: OpenedDisk) {
  const vols = [...opened.volumes].sort((a, b) => (a.part.offset < b.part.offset ? -1 : 1));
  return {
    path: image.path,
    format: image.format,
    virtualSize: image.virtualSize,
    ...(image.blockSize !== undefined ? { blockSize: image.blockSize } : {}),
    description: `BitLocker disk, ${vols.length} volume(s) decrypted`,
    /** The source's allocation, with each BitLocker volume allocated throughout (its holes decrypt to data). */
    async *extents(): AsyncIterable<{ offset: bigint; length: bigint; allocated: boolean }> {
      for await (const e of image.extents()) {
        let at = e.offset;
        const end = e.offset + e.length;
        while (at < end) {
          const inside = vols.find((v) => at >= v.part.offset && at < v.part.offset + v.part.size);
          if (inside) {
            const stop = inside.part.offset + inside.part.size < end ? inside.part.offset + inside.part.size : end;
            yield { offset: at, length: stop - at, allocated: true };
            at = stop;
            continue;
          }
          const next = vols.find((v) => v.part.offset > at);
          const stop = next && next.part.offset < end ? next.part.offset : end;
          yield { offset: at, length: stop - at, allocated: e.allocated };
          at = stop;
        }
      }
    },
    async read(offset: bigint, into: Uint8Array): Promise<void> {
      const end = offset + BigInt(into.length);
      let at = offset;
      while (at < end) {
        const inside = vols.find((v) => at >= v.part.offset && at < v.part.offset + v.part.size);
        const next = vols.find((v) => v.part.offset > at);
        const stop = inside ? (inside.part.offset + inside.part.size < end ? inside.part.offset + inside.part.size : end) : next && next.part.offset < end ? next.part.offset : end;
        const dst = into.subarray(Number(at - offset), Number(stop - offset));
        if (inside) {
          const rel = at - inside.part.offset;
          // A partition may be larger than its volume by less than a sector: that tail reads as zeros.
          const volEnd = inside.vol.size;
          const n = rel + BigInt(dst.length) <= volEnd ? dst.length : rel >= volEnd ? 0 : Number(volEnd - rel);
          if (n > 0) await inside.vol.read(rel, dst.subarray(0, n));
          dst.subarray(n).fill(0);
        } else await image.read(at, dst);
        at = stop;
      }
    },
    fileSpan: (): number | null => null,
    async close(): Promise<void> {
      for (const v of vols) v.vol.dispose();
      await image.close();
    },
  };
}
