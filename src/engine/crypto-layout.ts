/** Where an encrypted payload lives in its container's virtual disk and how its sectors are tweaked. */
import { segmentTweak, type LuksVolumeInfo } from '../luks/index.js';
import type { SectorTweak } from './sector-pipeline.js';

export type EncryptionFormat = 'luks2' | 'luks1' | 'plain';

/** Same shape as the NBD server's CryptoLayout, so an unlocked image can back an export. */
export interface PayloadLayout {
  readonly format: EncryptionFormat;
  readonly dataOffset: bigint;
  readonly payloadSize: bigint;
  readonly sectorSize: number;
  tweak(byteOffsetInPayload: bigint): SectorTweak;
  /** 'LUKS1', 'LUKS2', 'plain'. */
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
