/** Typed errors of the crypto core. */
import { VhdcryptError } from '../errors.js';

/** Misuse of the XTS primitive: bad key, length, sector size, tweak range, use after dispose. */
export class XtsError extends VhdcryptError {}

/** A backend (or a kernel of it) cannot run here; the message says why. */
export class XtsBackendUnavailableError extends VhdcryptError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('XTS_BACKEND_UNAVAILABLE', message, options);
  }
}
