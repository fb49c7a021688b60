/** Typed vault errors; every code starts with VAULT_ (the CLI maps them to exit status 5). */
import { VhdcryptError } from '../errors.js';

/** Every vault error code (all map to exit status 5). */
export const VAULT_ERROR_CODES = [
  'VAULT_SECRET_NOT_FOUND',
  'VAULT_SECRET_DISABLED',
  'VAULT_SECRET_NOT_YET_VALID',
  'VAULT_SECRET_EXPIRED',
  'VAULT_KEY_NOT_FOUND',
  'VAULT_KEY_DISABLED',
  'VAULT_KEY_NOT_YET_VALID',
  'VAULT_KEY_EXPIRED',
  'VAULT_FORBIDDEN',
  'VAULT_UNAUTHENTICATED',
  'VAULT_BAD_NAME',
  'VAULT_BAD_ID',
  'VAULT_BAD_ARGUMENT',
  'VAULT_INVALID_KEY',
  'VAULT_VALUE_TOO_LARGE',
  'VAULT_CONTENT_TYPE_TOO_LONG',
  'VAULT_TOO_MANY_TAGS',
  'VAULT_BAD_TAG',
  'VAULT_TAMPERED',
  'VAULT_WRONG_MASTER_KEY',
  'VAULT_PASSPHRASE_REQUIRED',
  'VAULT_KEY_FILE_PERMISSIONS',
  'VAULT_NOT_FOUND',
  'VAULT_ALREADY_EXISTS',
  'VAULT_NOT_FOR_DISK_ENCRYPTION',
  'VAULT_DELETED',
  'VAULT_NOT_DELETED',
  'VAULT_CONFLICT',
  'VAULT_PURGE_PROTECTED',
  'VAULT_BAD_BACKUP',
  'VAULT_UNWRAP_FAILED',
  'VAULT_NOT_A_DISK_SECRET',
  'VAULT_PRINCIPAL_NOT_FOUND',
  'VAULT_UNSUPPORTED_PROVIDER',
  'VAULT_UNSUPPORTED_ALGORITHM',
  'VAULT_STORAGE',
  'VAULT_CLOSED',
] as const;

export type VaultErrorCode = (typeof VAULT_ERROR_CODES)[number];

export class VaultError extends VhdcryptError {
  declare readonly code: VaultErrorCode;
  constructor(code: VaultErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
