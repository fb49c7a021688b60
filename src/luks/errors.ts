/** Typed errors of the LUKS part; every code starts with LUKS_ (see src/cli/exit-codes.ts). */
import { VhdcryptError } from '../errors.js';

export type LuksErrorCode =
  | 'LUKS_BAD_ARG'
  | 'LUKS_BAD_MAGIC'
  | 'LUKS_BAD_VERSION'
  | 'LUKS_BAD_HEADER'
  | 'LUKS_BAD_CHECKSUM'
  | 'LUKS_BOTH_HEADERS_BAD'
  | 'LUKS_BAD_JSON'
  | 'LUKS_BAD_LAYOUT'
  | 'LUKS_TRUNCATED'
  | 'LUKS_KEYSLOT_OUT_OF_RANGE'
  | 'LUKS_KEYSLOT_INACTIVE'
  | 'LUKS_KEYSLOTS_FULL'
  | 'LUKS_LAST_KEYSLOT'
  | 'LUKS_NO_KEYSLOT'
  | 'LUKS_WRONG_PASSPHRASE'
  | 'LUKS_UNKNOWN_KDF'
  | 'LUKS_KDF_TOO_COSTLY'
  | 'LUKS_ABORTED'
  | 'LUKS_KDF_FAILED'
  | 'LUKS_UNSUPPORTED_CIPHER'
  | 'LUKS_UNSUPPORTED_HASH'
  | 'LUKS_UNSUPPORTED_REQUIREMENT'
  | 'LUKS_UNSUPPORTED_VERSION_OP'
  | 'LUKS_KEYFILE_TOO_LARGE'
  | 'LUKS_TOKEN_NOT_FOUND'
  | 'LUKS_BAD_TOKEN'
  | 'LUKS_DEST_EXISTS';

/** An error about a LUKS header, keyslot or operation; `code` is stable. */
export class LuksError extends VhdcryptError {
  declare readonly code: LuksErrorCode;
  constructor(code: LuksErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
