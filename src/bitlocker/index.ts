/** BitLocker volumes (Windows 7 and later, To Go): metadata, protectors, the decrypted view; read only. */
export { BitlockerError, type BitlockerErrorCode } from './errors.js';
export {
  readFveMetadata,
  parseVolumeHeader,
  looksLikeBitlocker,
  checkReadable,
  guidString,
  CIPHERS,
  PROTECTIONS,
  FVE_BLOCK_SIZE,
  GUID_NORMAL,
  GUID_EOW,
  type FveMetadata,
  type VmkEntry,
  type CipherSpec,
  type VolumeBytes,
} from './metadata.js';
export { openVolumeKey, parseBek, recoveryKey, stretchKey, passwordHash, MAX_BEK_BYTES, type Protector, type OpenedKeys } from './keys.js';
export { sectorCipher, type SectorCipher } from './sector-cipher.js';
export { BitlockerVolume, segmentsOf, type Segment, type OpenVolumeOptions } from './volume.js';
export { readDiskLayout, partitionBytes, type DiskLayout, type Partition } from './partitions.js';
export { bekFromVault } from './vault-bek.js';
export { resolveProtector, openDiskVolumes, decryptedDisk, diskBytes, type BitlockerKeyOptions, type DiskSource, type OpenedDisk } from './disk.js';
