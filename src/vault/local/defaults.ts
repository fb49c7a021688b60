/**
 * The embedded vault's constants that its callers name too (the library exports them), in a module apart from
 * the vault's code: the CLI loads that code only when it opens a file: vault (see rolldown.config.mjs).
 */

/** The principal that opens the vault with its master key (no token). */
export const OWNER = 'owner';

/** The master-key KDF (argon2id) of a new vault unless the environment or a caller lowers it (tests). */
export const PRODUCTION_KDF = { memoryKiB: 65536, iterations: 3, parallelism: 4 } as const;
