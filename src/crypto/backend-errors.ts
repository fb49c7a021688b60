/** Typed errors of the crypto core; the codes and their exit statuses are declared in src/error-codes.ts. */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type XtsErrorCode = CodesOf<'XTS'>;

/** Misuse of the XTS primitive: bad key, length, sector size, tweak range, use after dispose. */
export class XtsError extends VhdcryptError {
  declare readonly code: XtsErrorCode;
  constructor(code: XtsErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** A backend (or a kernel of it) cannot run here; the message says why. */
export class XtsBackendUnavailableError extends VhdcryptError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XTS_BACKEND_UNAVAILABLE', message, options);
  }
}
