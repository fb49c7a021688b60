/** Typed errors of the LUKS part; the codes and their exit statuses are declared in src/error-codes.ts. */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type LuksErrorCode = CodesOf<'LUKS'>;

/** An error about a LUKS header, keyslot or operation; `code` is stable. */
export class LuksError extends VhdcryptError {
  declare readonly code: LuksErrorCode;
  constructor(code: LuksErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
