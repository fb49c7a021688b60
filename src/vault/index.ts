/** The vault: Key Vault-style secrets and keys, KEK-wrapped disk keys, the embedded local vault. */
export { VaultError, VAULT_ERROR_CODES } from './errors.js';
export type { VaultErrorCode } from './errors.js';
export * from './types.js';
export { openVault, defaultVaultPath, defaultVaultUri } from './open-vault.js';
export type { OpenVaultOptions } from './open-vault.js';
export { objectId, resolveRef } from './object-id.js';
export type { ObjectKind, ObjectRef } from './object-id.js';
export {
  MAX_SECRET_VALUE_BYTES, MAX_CONTENT_TYPE_CHARS, MAX_TAGS, MAX_TAG_NAME_CHARS, MAX_TAG_VALUE_CHARS,
} from './limits.js';
export {
  sealDiskKey, unsealDiskKey, findDiskSecretByVolumeUuid, diskSecretName, diskLineages, isDiskSecretType,
  WRAPPED_KEY_CONTENT_TYPE, ADE_CONTENT_TYPE, TAG_ADE_FILE_NAME, TAG_ADE_MACHINE_NAME, ADE_LINUX_FILE_NAME, TAG_ALGORITHM, TAG_KEK_URL, TAG_VOLUME_UUID, TAG_SOURCE_IMAGE, TAG_DISK_ID, TAG_REWRAP_OF,
} from './disk-keys.js';
export type { SealDiskKeyRequest, WrappedKeyDocument } from './disk-keys.js';
export { rotateKek, TAG_ROTATION } from './rotate-kek.js';
export type { RotateKekOptions, RotateKekResult } from './rotate-kek.js';
export { OWNER, PRODUCTION_KDF } from './local/defaults.js';
