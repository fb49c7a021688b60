/** vhdcrypt's public library API. */
export { VhdcryptError, isVhdcryptError } from './errors.js';

// Crypto core (issue 2): AES-XTS over runs of sectors.
export { createXts, availableBackends, XtsError, XtsBackendUnavailableError } from './crypto/index.js';
export type { Xts, XtsOptions, SectorOptions, BackendChoice, BackendName } from './crypto/index.js';

// LUKS1/LUKS2 volumes (issue 4): luks.format, luks.unlock, luks.dump, ...
export * as luks from './luks/index.js';
export { LuksError, segmentTweak } from './luks/index.js';
export type { LuksVolumeInfo, LuksSecret, LuksErrorCode } from './luks/index.js';
