/** Typed vault errors; the codes and their exit statuses are declared in src/error-codes.ts. */
import { ERROR_CODES, type CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type VaultErrorCode = CodesOf<'VAULT'>;

/** Every vault error code. */
export const VAULT_ERROR_CODES: readonly VaultErrorCode[] = Object.keys(ERROR_CODES).filter((c): c is VaultErrorCode => c.startsWith('VAULT_'));

export class VaultError extends VhdcryptError {
  declare readonly code: VaultErrorCode;
  constructor(code: VaultErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
