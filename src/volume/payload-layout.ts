/**
 * Where an encrypted payload lives in its container's virtual disk and how its sectors are tweaked: the one
 * description the file jobs, the streams and the NBD server all work from.
 */
import { segmentTweak, type LuksVolumeInfo } from '../luks/index.js';

export type EncryptionFormat = 'luks2' | 'luks1' | 'plain';

/** The XTS tweak of a run's first sector, and how much it grows from one sector to the next. */
export interface SectorTweak {
  readonly firstTweak: bigint;
  readonly tweakStep: number;
}

export interface PayloadLayout {
  readonly format: EncryptionFormat;
  /** Byte offset of the payload in the container's virtual disk. */
  readonly dataOffset: bigint;
  /** Bytes of payload (plaintext), a whole number of sectors. */
  readonly payloadSize: bigint;
  /** Crypto sector size: 512 or 4096. */
  readonly sectorSize: number;
  /** The tweak of the sector at this byte offset of the payload, and the step between sectors. */
  tweak(byteOffsetInPayload: bigint): SectorTweak;
  /** 'LUKS1', 'LUKS2', 'plain': for descriptions. */
  readonly label: string;
}

/** A LUKS segment over a disk of `diskSize` bytes. */
export function luksLayout(info: LuksVolumeInfo, diskSize: bigint): PayloadLayout {
  let payloadSize = info.dataSize === 'dynamic' ? diskSize - info.dataOffset : info.dataSize;
  // A whole number of crypto sectors; a dynamic segment ignores a partial last sector as dm-crypt does.
  payloadSize -= payloadSize % BigInt(info.sectorSize);
  return Object.freeze({
    format: info.version === 1 ? 'luks1' : 'luks2',
    dataOffset: info.dataOffset,
    payloadSize,
    sectorSize: info.sectorSize,
    tweak: (off: bigint) => segmentTweak(info, off),
    label: info.version === 1 ? 'LUKS1' : 'LUKS2',
  } as const);
}

/**
 * Plain dm-crypt (cryptsetup open --type plain, aes-xts-plain64, offset 0):
 * the IV counts 512-byte units whatever the sector size (no iv_large_sectors).
 */
export function plainLayout(diskSize: bigint, sectorSize: number): PayloadLayout {
  const payloadSize = diskSize - (diskSize % BigInt(sectorSize));
  const step = sectorSize / 512;
  return Object.freeze({
    format: 'plain',
    dataOffset: 0n,
    payloadSize,
    sectorSize,
    tweak: (off: bigint) => ({ firstTweak: off / 512n, tweakStep: step }),
    label: 'plain',
  } as const);
}
