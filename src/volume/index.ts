/**
 * The volume layer: everything about an encrypted volume that is not a whole-image job. Unlock (LUKS and plain;
 * the vault found by token, LUKS UUID or VHD UUID), key sources and who wipes what (see key-source.ts), making
 * keys and headers, the payload layout, and the checks of a volume's options. The file jobs, the streams and the
 * NBD server all stand on it. It imports only crypto, image, luks, vault and the root modules.
 */
export { VolumeError, type VolumeErrorCode } from './errors.js';
export { imageSource, type VolumeSource } from './volume-source.js';
export { luksLayout, plainLayout, type EncryptionFormat, type PayloadLayout, type SectorTweak } from './payload-layout.js';
export {
  DEFAULT_BATCH_BYTES,
  ENCRYPTION_FORMATS,
  KEY_SIZES,
  MAX_BATCH_BYTES,
  SECTOR_SIZES,
  checkBatchBytes,
  checkFormat,
  checkKeySize,
  checkNewVolumeOptions,
  checkSectorSize,
  chooseDataOffset,
  chooseSectorSize,
  type KeySize,
  type NewVolumeOptions,
  type SectorSize,
} from './options.js';
export { hasUserSecret, plainKeyFromFile, userSecret, wipeSecret, type KeySourceOptions } from './key-source.js';
export {
  findPlainVolumeSecret,
  keyslotSecret,
  readLuksLayout,
  unlockImage,
  unlockImageWithSecret,
  unlockVolume,
  vaultTokenOf,
  pkcs11Of,
  type KeyslotSecret,
  type UnlockImageOptions,
  type UnlockedImage,
  type UnlockedImageWithSecret,
} from './unlock-image.js';
export {
  GENERATED_PASSPHRASE_BYTES,
  KDF_TYPED_PASSPHRASE_LUKS1,
  prepareEncryption,
  randomTextPassphrase,
  typedKdf,
  type EncryptionKeyOptions,
  type EncryptionPlan,
  type PreparedEncryption,
} from './encryption-keys.js';
export { hasLuksMagic, probeLuksHeader, readLuksInfo, readLuksRegion, readVolumeLuksInfo, writeLuksRegion, writeNewLuksRegion, type LuksRegion } from './luks-region.js';
export { DEFAULT_KEK, TAG_PENDING, defaultVaultExists, discardSecret, openVolumeVault, type VolumeVault } from './vault-link.js';
export {
  KDF_SYSTEMD_PKCS11, SYSTEMD_PKCS11_TOKEN, preparePkcs11Keyslot, systemdPkcs11TokensOf, pkcs11TokenPassphrase,
  type Pkcs11Enrollment, type PreparedPkcs11Keyslot, type SystemdPkcs11Token,
} from './pkcs11-token.js';
