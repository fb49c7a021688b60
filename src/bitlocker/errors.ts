import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

/** Stable codes of every error the BitLocker reader raises (declared with their exit statuses in src/error-codes.ts). */
export type BitlockerErrorCode = CodesOf<'BITLK'>;

/** A BitLocker volume that cannot be read: damaged, unsupported, or the key given does not open it. */
export class BitlockerError extends VhdcryptError {
  declare readonly code: BitlockerErrorCode;
  constructor(code: BitlockerErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
