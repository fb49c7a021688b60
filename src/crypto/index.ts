/** The crypto core: AES-XTS sector encryption on native, WASM and JS backends. */
export { createXts, availableBackends } from './xts.js';
export { nativeKernels } from './native-backend.js';
export type { Xts, XtsOptions, SectorOptions, BackendChoice } from './xts.js';
export type { BackendName } from './kernel.js';
export { XtsError, XtsBackendUnavailableError } from './backend-errors.js';
