/** The vault as a service: Key Vault's data plane and an Entra-style token endpoint over HTTPS (`vhdcrypt vault serve`). */
export { startVaultServer, MAX_BODY_BYTES } from './server.js';
export type { VaultServerOptions, RunningVaultServer } from './server.js';
export { DEFAULT_AUTH_LIMITS } from './auth-limiter.js';
export type { AuthLimits } from './auth-limiter.js';
export { MAX_TOKEN_LIFETIME_S } from './access-tokens.js';
