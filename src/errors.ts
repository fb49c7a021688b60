/**
 * The project's error base. Every error a caller can see carries a stable
 * `code` (e.g. `VHD_BAD_CHECKSUM`, `LUKS_NO_KEYSLOT`), declared with its exit
 * status in error-codes.ts. Messages never contain key material.
 */
import type { ErrorCode } from './error-codes.js';

export type { ErrorCode } from './error-codes.js';

export class VhdcryptError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `e` is one of ours with the given code (or any code when omitted). */
export function isVhdcryptError(e: unknown, code?: ErrorCode): e is VhdcryptError {
  return e instanceof VhdcryptError && (code === undefined || e.code === code);
}
