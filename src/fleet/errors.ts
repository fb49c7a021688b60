/** Typed errors of the fleet; the codes and their exit statuses are declared in src/error-codes.ts. */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type FleetErrorCode = CodesOf<'FLEET'>;

export class FleetError extends VhdcryptError {
  declare readonly code: FleetErrorCode;
  constructor(code: FleetErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
