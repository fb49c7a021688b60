/** vhdcrypt's public library API. */
export { VhdcryptError, isVhdcryptError } from './errors.js';

// Crypto core (issue 2): AES-XTS over runs of sectors.
export { createXts, availableBackends, XtsError, XtsBackendUnavailableError } from './crypto/index.js';
export type { Xts, XtsOptions, SectorOptions, BackendChoice, BackendName } from './crypto/index.js';
