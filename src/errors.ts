/**
 * The project's error base. Every error a caller can see carries a stable
 * `code` (e.g. `VHD_BAD_CHECKSUM`, `LUKS_NO_KEYSLOT`) that the CLI maps to a
 * message and an exit status. Messages never contain key material.
 */
export class VhdcryptError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** True when `e` is one of ours with the given code (or any code when omitted). */
export function isVhdcryptError(e: unknown, code?: string): e is VhdcryptError {
  return e instanceof VhdcryptError && (code === undefined || e.code === code);
}
