/** Typed errors of the binary struct layouts; the codes and their exit statuses are declared in src/error-codes.ts. */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type StructErrorCode = CodesOf<'STRUCT'>;

/** A value that does not fit its field, or a buffer too short for a structure; `field` names the field when one is at fault. */
export class StructError extends VhdcryptError {
  declare readonly code: StructErrorCode;
  constructor(
    code: StructErrorCode,
    readonly field: string | null,
    message: string,
  ) {
    super(code, message);
  }
}
