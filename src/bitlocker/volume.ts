/**
 * The decrypted view of a BitLocker volume, as cryptsetup's BITLK activation maps it: the three FVE metadata
 * blocks and the relocated header area read as zeros; bytes [0, header size) are the relocated header sectors,
 * decrypted with the IVs of where they are stored; everything else is decrypted in place.
 */
import type { BackendChoice } from '../crypto/index.js';
import { BitlockerError } from './errors.js';
import { openVolumeKey, type Protector } from './keys.js';
import { checkReadable, FVE_BLOCK_SIZE, readFveMetadata, type FveMetadata, type VolumeBytes } from './metadata.js';
import { sectorCipher, type SectorCipher } from './sector-cipher.js';

/** A run of the decrypted volume: zeros, or ciphertext stored at `stored` decrypted with that place's IVs. */
export interface Segment {
  readonly offset: bigint;
  readonly length: bigint;
  readonly kind: 'zero' | 'crypt';
  /** crypt: where the run's ciphertext lies in the volume. */
  readonly stored: bigint;
}

/** The segments covering [0, size), in order. */
export function segmentsOf(meta: FveMetadata, size: bigint): Segment[] {
  const fixed: Segment[] = [
    ...meta.metadataOffsets.map((o) => ({ offset: o, length: BigInt(FVE_BLOCK_SIZE), kind: 'zero' as const, stored: 0n })),
    { offset: meta.volumeHeaderOffset, length: meta.volumeHeaderSize, kind: 'zero', stored: 0n },
    { offset: 0n, length: meta.volumeHeaderSize, kind: 'crypt', stored: meta.volumeHeaderOffset },
  ];
  const sorted = fixed.filter((s) => s.length > 0n).sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  const out: Segment[] = [];
  let at = 0n;
  for (const s of sorted) {
    if (s.offset < at || s.offset + s.length > size) {
      throw new BitlockerError('BITLK_BAD_METADATA', `metadata areas overlap or leave the volume (area at ${s.offset}, ${s.length} bytes)`);
    }
    if (s.offset > at) out.push({ offset: at, length: s.offset - at, kind: 'crypt', stored: at });
    out.push(s);
    at = s.offset + s.length;
  }
  if (at < size) out.push({ offset: at, length: size - at, kind: 'crypt', stored: at });
  return out;
}

export interface OpenVolumeOptions {
  readonly backend?: BackendChoice;
}

/** An unlocked BitLocker volume. dispose() wipes its key. */
export class BitlockerVolume {
  readonly size: bigint;
  readonly sectorSize: number;
  readonly segments: readonly Segment[];
  private readonly cipher: SectorCipher;
  private disposed = false;

  private constructor(
    readonly meta: FveMetadata,
    private readonly source: VolumeBytes,
    /** The FVEK; the volume's own copy, wiped by dispose(). */
    readonly fvek: Buffer,
    readonly vmkGuid: string,
    backend: BackendChoice,
  ) {
    this.size = source.size - (source.size % BigInt(meta.sectorSize));
    this.sectorSize = meta.sectorSize;
    this.segments = segmentsOf(meta, this.size);
    this.cipher = sectorCipher(meta.cipher, fvek, meta.sectorSize, backend);
  }

  /** Read the metadata, refuse what cannot be read, open the FVEK with `protector`. */
  static async open(source: VolumeBytes, protector: Protector, opts: OpenVolumeOptions = {}): Promise<BitlockerVolume> {
    const meta = await readFveMetadata(source);
    checkReadable(meta);
    const { fvek, vmkGuid } = openVolumeKey(meta, protector);
    try {
      return new BitlockerVolume(meta, source, fvek, vmkGuid, opts.backend ?? 'auto');
    } catch (e) {
      fvek.fill(0);
      throw e;
    }
  }

  /** Decrypt whole sectors in place, stored at `stored` (the engine's batches call this for CBC volumes). */
  decryptStored(data: Uint8Array, stored: bigint): void {
    if (this.disposed) throw new BitlockerError('BITLK_BAD_ARGUMENT', 'the BitLocker volume was closed');
    this.cipher.decrypt(data, stored);
  }

  /** Fill `into` with the decrypted view from `offset` (any alignment). */
  async read(offset: bigint, into: Uint8Array): Promise<void> {
    if (this.disposed) throw new BitlockerError('BITLK_BAD_ARGUMENT', 'the BitLocker volume was closed');
    const end = offset + BigInt(into.length);
    if (offset < 0n || end > this.size) throw new BitlockerError('BITLK_BAD_ARGUMENT', `read [${offset}, ${end}) outside the ${this.size}-byte volume`);
    const ss = BigInt(this.sectorSize);
    for (const s of this.segments) {
      const from = s.offset > offset ? s.offset : offset;
      const to = s.offset + s.length < end ? s.offset + s.length : end;
      if (from >= to) continue;
      const dst = into.subarray(Number(from - offset), Number(to - offset));
      if (s.kind === 'zero') {
        dst.fill(0);
        continue;
      }
      const a = (from / ss) * ss;
      const b = ((to + ss - 1n) / ss) * ss;
      const buf = Buffer.alloc(Number(b - a));
      const stored = s.stored + (a - s.offset);
      await this.source.read(stored, buf);
      this.cipher.decrypt(buf, stored);
      dst.set(buf.subarray(Number(from - a), Number(to - a)));
      buf.fill(0);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cipher.dispose();
    this.fvek.fill(0);
  }
}
