/**
 * Exit statuses (documented in the README): 0 ok, 1 generic failure of a typed
 * error, 2 usage, 3 bad or damaged input, 4 wrong key / passphrase / no keyslot,
 * 5 vault refused (missing, disabled, forbidden), 6 destination exists or no space,
 * 7 unsupported feature, 130 interrupted, 70 internal error.
 */
import type { VhdcryptError } from '../errors.js';

const BY_PREFIX: Array<[RegExp, number]> = [
  [/^(CLI_USAGE|ENGINE_BAD_ARGUMENT|XTS_BAD_ARG|XTS_BAD_KEY|XTS_BAD_LENGTH|XTS_BAD_SECTOR_SIZE|XTS_TWEAK_OVERFLOW)/, 2],
  [/(WRONG_PASSPHRASE|NO_KEYSLOT|BAD_KEY|DIGEST_MISMATCH)/, 4],
  [/^VAULT_/, 5],
  [/(DEST_EXISTS|TEMP_EXISTS|NO_SPACE|ENOSPC)/, 6],
  [/UNSUPPORTED/, 7],
  [/(ABORTED|INTERRUPTED)/, 130],
  [/^(VHD_|RAW_|LUKS_|IMAGE_|NBD_)/, 3],
];

/** Map an error code to the process exit status. */
export function exitCodeFor(e: VhdcryptError): number {
  for (const [re, status] of BY_PREFIX) if (re.test(e.code)) return status;
  return 1;
}
