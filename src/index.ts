/** vhdcrypt's public library API. */
import { registerNbdSource } from './nbd/source-kind.js';

// The package assembles its parts here: engine jobs open NBD exports (nbd://, nbd+unix://) as sources through the
// image layer's registry, which knows no NBD itself.
registerNbdSource();

export { VhdcryptError, isVhdcryptError } from './errors.js';
// Binary struct layouts: a value too large for its field, or a buffer too short for a structure.
export { StructError, type StructErrorCode } from './binary/index.js';

// Crypto core: AES-XTS over runs of sectors.
export { createXts, availableBackends, XtsError, XtsBackendUnavailableError } from './crypto/index.js';
export type { Xts, XtsOptions, SectorOptions, BackendChoice, BackendName } from './crypto/index.js';

// LUKS1/LUKS2 volumes: luks.format, luks.unlock, luks.dump, ...
export * as luks from './luks/index.js';
export { LuksError, segmentTweak } from './luks/index.js';
export type { LuksVolumeInfo, LuksSecret, LuksErrorCode } from './luks/index.js';

// Disk images: VHD fixed/dynamic/differencing and raw, plus the VHD layout for streaming parsers.
export { openImage, createImage, checkAzureReady, ImageError, openSource, registerSourceKind } from './image/index.js';
export { readVhdFooter, encodeVhdFooter, readDynamicHeader, encodeDynamicHeader, chsGeometry, vhdChecksum } from './image/index.js';
export type { DiskImage, WritableImage, Extent, ImageFormat, ImageErrorCode, VhdFooter, DynamicHeader, ParentLocator, ChsGeometry, OpenImageOptions, ParentSearchOptions, CreateImageOptions, SourceKind } from './image/index.js';

// Encrypted volumes: unlocking (LUKS and plain, keys from the caller or the vault) and the payload layout.
export { unlockImage, luksLayout, plainLayout, VolumeError } from './volume/index.js';
export type { UnlockImageOptions, UnlockedImage, PayloadLayout, EncryptionFormat, SectorTweak, VolumeErrorCode } from './volume/index.js';

// The engine: whole images through the worker pool, keyslots and headers of encrypted images.
export {
  encryptImage,
  decryptImage,
  describeImage,
  addImageKeyslot,
  removeImageKeyslot,
  listImageKeyslots,
  backupImageHeader,
  restoreImageHeader,
  exportImageKey,
  EngineError,
} from './engine/index.js';
export type { EncryptOptions, DecryptOptions, OutputFormat, Progress, RunOptions, RunResult, EngineErrorCode, ImageDescription, ExportImageKeyOptions, ExportImageKeyResult } from './engine/index.js';

// Engine streams: a VHD or raw image stream in, the encrypted (or decrypted) image stream out, one pass.
export { createEncryptStream, createDecryptStream, EncryptStream, DecryptStream } from './engine/index.js';
export type { EncryptStreamOptions, DecryptStreamOptions, StreamResult, StreamInputFormat } from './engine/index.js';

// The vault: Key Vault-style secrets and keys, KEK-wrapped disk keys, the embedded local vault.
export {
  openVault,
  defaultVaultUri,
  sealDiskKey,
  unsealDiskKey,
  findDiskSecretByVolumeUuid,
  rotateKek,
  VaultError,
} from './vault/index.js';
export type { Vault, VaultErrorCode, SealDiskKeyRequest, RotateKekOptions, RotateKekResult, OpenVaultOptions } from './vault/index.js';

// PKCS#11 tokens: KEKs and vault master keys kept in an HSM or smartcard (pkcs11js, optional, loaded on first use).
export { Pkcs11Error, parsePkcs11Uri, generateTokenKey, wrapWithToken, unwrapWithToken, tokenKeyAttributes } from './pkcs11/index.js';
export type { Pkcs11Access, Pkcs11ErrorCode, Pkcs11Mechanism, Pkcs11Uri, Pkcs11WrapOptions, KeygenRequest, KeygenResult } from './pkcs11/index.js';

// NBD: serve images (plaintext or decrypted) over NBD, and read source disks from NBD exports.
export { NbdServer, ImageBacking, EncryptedBacking, NbdClient, openNbdImage, parseNbdUri, formatNbdUri, isNbdUri, NbdError } from './nbd/index.js';
export { registerNbdSource, NBD_SOURCE_KIND } from './nbd/source-kind.js';
export type { NbdBacking, NbdServerOptions, NbdEndpoint, NbdImage, CryptoLayout, NbdAddress } from './nbd/index.js';
// BitLocker disks (read only): decrypt in place, migrate to LUKS2, and the reader underneath.
export { decryptBitlockerImage, bitlockerToLuks, describeBitlockerDisk } from './engine/index.js';
export type { BitlockerDecryptOptions, BitlockerDecryptResult, BitlockerToLuksOptions, BitlockerToLuksResult, BitlockerDescription } from './engine/index.js';
export { BitlockerError, BitlockerVolume, readFveMetadata, readDiskLayout, openDiskVolumes, decryptedDisk } from './bitlocker/index.js';
export type { BitlockerErrorCode, Protector, FveMetadata, DiskLayout, Partition } from './bitlocker/index.js';
