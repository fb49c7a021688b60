/** Typed PKCS#11 errors; the codes and their exit statuses are declared in src/error-codes.ts. */
import { ERROR_CODES, type CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type Pkcs11ErrorCode = CodesOf<'PKCS11'>;

/** Every PKCS#11 error code. */
export const PKCS11_ERROR_CODES: readonly Pkcs11ErrorCode[] = Object.keys(ERROR_CODES).filter((c): c is Pkcs11ErrorCode => c.startsWith('PKCS11_'));

export class Pkcs11Error extends VhdcryptError {
  declare readonly code: Pkcs11ErrorCode;
  constructor(code: Pkcs11ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
