/** LUKS1 and LUKS2 volumes: headers, keyslots, tokens. */
export { LuksError, type LuksErrorCode } from './errors.js';
export type { LuksTarget, LuksBlockDevice } from './header-io.js';
export { type LuksSecret, MAX_KEYFILE_BYTES } from './secret-input.js';
export {
  DEFAULT_KDF_LIMITS,
  KDF_RANDOM_SECRET,
  KDF_TYPED_PASSPHRASE,
  type KdfLimits,
  type KdfOptions,
  type LuksHash,
} from './kdf.js';
export {
  format,
  unlock,
  readVolumeInfo,
  addKeyslot,
  removeKeyslot,
  changePassphrase,
  listTokens,
  addToken,
  removeToken,
  vaultToken,
  repairHeader,
  type FormatOptions,
  type UnlockOptions,
  type KeyslotWriteOptions,
} from './operations.js';
export { LUKS_MAGIC, LUKS2_MAGIC_SECONDARY, LUKS_MAX_HEADER_REGION } from './on-disk.js';
export { segmentTweak, type LuksVolumeInfo, type LuksKeyslotSummary } from './volume-info.js';
export type { LuksToken, JsonObject } from './luks2-json.js';
export { dump, keyslotPriorityName, usedRangesOf, type LuksDump } from './dump.js';
export { backupHeader, restoreHeader } from './header-backup.js';
