/**
 * The checks and defaults of a volume's parameters, declared once for every caller: encryptImage and
 * decryptImage, the encrypt and decrypt streams, unlock, and `serve`. Each names the option and what it expected.
 */
import { VolumeError } from './errors.js';
import type { EncryptionFormat } from './payload-layout.js';

const MIB = 1n << 20n;

export const ENCRYPTION_FORMATS: readonly EncryptionFormat[] = ['luks2', 'luks1', 'plain'];
/** aes-xts-plain64 key sizes in bits: AES-128 and AES-256 (two halves each). */
export const KEY_SIZES = [256, 512] as const;
/** Crypto sector sizes dm-crypt and QEMU both take (LUKS1: 512 only). */
export const SECTOR_SIZES = [512, 4096] as const;

export type KeySize = (typeof KEY_SIZES)[number];
export type SectorSize = (typeof SECTOR_SIZES)[number];

/** Bytes of payload per batch through the workers by default. */
export const DEFAULT_BATCH_BYTES = 4 << 20;
/** The largest batch: what one slot of a worker ring may hold. */
export const MAX_BATCH_BYTES = 64 << 20;

export function checkFormat(format: unknown): EncryptionFormat {
  if (!ENCRYPTION_FORMATS.includes(format as EncryptionFormat)) {
    throw new VolumeError('ENGINE_BAD_ARGUMENT', `format expected ${ENCRYPTION_FORMATS.join(', ')}, got ${String(format)}`);
  }
  return format as EncryptionFormat;
}

export function checkKeySize(bits: unknown, what = 'key size'): KeySize {
  if (!KEY_SIZES.includes(bits as KeySize)) throw new VolumeError('ENGINE_BAD_ARGUMENT', `${what} expected ${KEY_SIZES.join(' or ')}, got ${String(bits)}`);
  return bits as KeySize;
}

export function checkSectorSize(bytes: unknown, what = 'sector size'): SectorSize {
  if (!SECTOR_SIZES.includes(bytes as SectorSize)) throw new VolumeError('ENGINE_BAD_ARGUMENT', `${what} expected ${SECTOR_SIZES.join(' or ')}, got ${String(bytes)}`);
  return bytes as SectorSize;
}

/** Batch size: a whole number of 4096-byte sectors (so of 512-byte ones too), from 4 KiB up to 64 MiB. */
export function checkBatchBytes(bytes: unknown): number {
  const bb = bytes ?? DEFAULT_BATCH_BYTES;
  if (typeof bb !== 'number' || !Number.isInteger(bb) || bb < 4096 || bb % 4096 !== 0 || bb > MAX_BATCH_BYTES) {
    throw new VolumeError('ENGINE_BAD_ARGUMENT', `batchBytes expected a multiple of 4096 up to 64 MiB, got ${String(bb)}`);
  }
  return bb;
}

/** The parameters a new volume is asked for, checked before anything is read or written. */
export interface NewVolumeOptions {
  readonly format?: EncryptionFormat;
  readonly keySize?: KeySize;
  readonly sectorSize?: SectorSize;
  readonly dataOffset?: bigint;
}

export function checkNewVolumeOptions(o: NewVolumeOptions): void {
  if (o.format !== undefined) checkFormat(o.format);
  if (o.keySize !== undefined) checkKeySize(o.keySize);
  if (o.sectorSize !== undefined) checkSectorSize(o.sectorSize);
  if (o.dataOffset !== undefined) checkDataOffset(o.dataOffset);
}

function checkDataOffset(asked: unknown): bigint {
  if (typeof asked !== 'bigint' || asked <= 0n || asked % 4096n !== 0n) {
    throw new VolumeError('ENGINE_BAD_ARGUMENT', `data offset ${String(asked)} must be a positive multiple of 4096`);
  }
  return asked;
}

/**
 * The crypto sector size of a new volume: the one asked for, else LUKS2 takes 4096 when the disk size allows
 * (an unknown size, a stream's, is assumed to), LUKS1 and plain 512. The disk must be whole sectors.
 */
export function chooseSectorSize(format: EncryptionFormat, asked: SectorSize | undefined, size: bigint | null): SectorSize {
  if (asked !== undefined) checkSectorSize(asked);
  if (format === 'luks1' && asked === 4096) throw new VolumeError('ENGINE_UNSUPPORTED_SECTOR_SIZE', 'LUKS1 has 512-byte sectors only');
  const s = asked ?? (format === 'luks2' && (size === null || size % 4096n === 0n) ? 4096 : 512);
  if (size !== null && size % BigInt(s) !== 0n) {
    throw new VolumeError('ENGINE_UNSUPPORTED_SECTOR_SIZE', `the disk size ${size} is not a whole number of ${s}-byte sectors; use sector size 512`);
  }
  return s;
}

/**
 * The payload offset of a new LUKS volume: the one asked for (a positive multiple of 4096), else cryptsetup's
 * 2 MiB (LUKS1) or 16 MiB (LUKS2), rounded up to whole container blocks so payload blocks line up with container
 * blocks. Plain volumes have no header: 0.
 */
export function chooseDataOffset(format: EncryptionFormat, asked: bigint | undefined, blockSize: number): bigint {
  if (format === 'plain') return 0n;
  const base = asked !== undefined ? checkDataOffset(asked) : format === 'luks1' ? 2n * MIB : 16n * MIB;
  const bs = BigInt(blockSize);
  return ((base + bs - 1n) / bs) * bs;
}
