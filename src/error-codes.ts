/**
 * Every error code of every part, declared once with the process exit status the CLI returns for it and, where a
 * backing error reaches an NBD client, the NBD error value the reply carries. The parts' code types, the CLI's exit
 * statuses and the NBD server's error replies are all derived from this table; the README's table of exit statuses
 * is checked against it by a test.
 */

/** Exit statuses (README "Exit statuses"). 0 (done) and 70 (internal error: not one of ours) have no code. */
export const EXIT = {
  /** a typed error not listed below */
  failed: 1,
  /** bad option or argument: the command line (or a library call) asked for something impossible */
  usage: 2,
  /** bad or damaged input: image, header, stream, journal, or a named file that cannot be opened */
  badInput: 3,
  /** wrong passphrase or key, no usable keyslot */
  wrongKey: 4,
  /** the vault refused: missing, disabled, expired, forbidden, tampered */
  vault: 5,
  /** destination exists, an interrupted run's temp file is there, or no space left */
  exists: 6,
  /** unsupported feature (cipher, format, provider) */
  unsupported: 7,
  /** interrupted (SIGINT, SIGTERM, an AbortSignal) */
  interrupted: 130,
} as const;

export type ExitStatus = (typeof EXIT)[keyof typeof EXIT];

/**
 * NBD error values a failed request can be answered with (proto.md "Error values"); the NBD part maps these names
 * to the protocol's numbers. A code without one is answered with EIO.
 */
export type NbdErrnoName = 'EPERM' | 'EIO' | 'ENOMEM' | 'EINVAL' | 'ENOSPC' | 'EOVERFLOW' | 'ENOTSUP' | 'ESHUTDOWN';

export interface ErrorCodeSpec {
  readonly status: ExitStatus;
  readonly nbd?: NbdErrnoName;
}

const failed = { status: EXIT.failed } as const;
const usage = { status: EXIT.usage } as const;
const usageEinval = { status: EXIT.usage, nbd: 'EINVAL' } as const;
const badInput = { status: EXIT.badInput } as const;
const wrongKey = { status: EXIT.wrongKey } as const;
const vault = { status: EXIT.vault } as const;
const exists = { status: EXIT.exists } as const;
const unsupported = { status: EXIT.unsupported } as const;
const interrupted = { status: EXIT.interrupted } as const;

export const ERROR_CODES = {
  // The command line itself (commander's own usage errors exit 2 as well).
  CLI_USAGE: usage,

  // AES-XTS (src/crypto). Misuse is a usage error; a key that cannot be an XTS key is a wrong key.
  XTS_BAD_ARG: usageEinval,
  XTS_BAD_KEY: usage,
  XTS_BAD_LENGTH: usageEinval,
  XTS_BAD_SECTOR_SIZE: usage,
  XTS_TWEAK_OVERFLOW: usageEinval,
  XTS_DISPOSED: usage,
  XTS_EQUAL_KEY_HALVES: wrongKey,
  XTS_BACKEND_UNAVAILABLE: unsupported,

  // Binary struct layouts (src/binary): a value too large for its field is refused, never truncated.
  STRUCT_FIELD_OVERFLOW: usageEinval,
  STRUCT_BAD_VALUE: usageEinval,
  STRUCT_TRUNCATED: badInput,

  // Disk images (src/image).
  VHD_BAD_COOKIE: badInput,
  VHD_BAD_CHECKSUM: badInput,
  VHD_BAD_DYNAMIC_HEADER: badInput,
  VHD_UNSUPPORTED_VERSION: unsupported,
  VHD_UNKNOWN_DISK_TYPE: badInput,
  VHD_BAD_BLOCK_SIZE: badInput,
  VHD_BAD_TABLE: badInput,
  VHD_BAT_OUT_OF_RANGE: badInput,
  VHD_BAT_OVERLAP: badInput,
  VHD_TRUNCATED: badInput,
  VHD_BAD_LOCATOR: badInput,
  VHD_PARENT_MISSING: badInput,
  VHD_PARENT_MISMATCH: badInput,
  VHD_PARENT_LOOP: badInput,
  VHD_PARENT_NOT_ALLOWED: badInput,
  VHD_UNSUPPORTED_SIZE: unsupported,
  IMAGE_BAD_SIZE: badInput,
  IMAGE_BAD_ARGUMENT: usageEinval,
  IMAGE_READ_ONLY: { status: EXIT.badInput, nbd: 'EPERM' },
  IMAGE_OUT_OF_RANGE: { status: EXIT.badInput, nbd: 'EINVAL' },
  IMAGE_CLOSED: failed,
  IMAGE_DEST_EXISTS: exists,
  IMAGE_TRUNCATED: badInput,
  IMAGE_UNKNOWN_SOURCE_KIND: unsupported,

  // LUKS (src/luks).
  LUKS_BAD_ARG: usageEinval,
  LUKS_BAD_MAGIC: badInput,
  LUKS_BAD_VERSION: badInput,
  LUKS_BAD_HEADER: badInput,
  LUKS_BAD_CHECKSUM: badInput,
  LUKS_BOTH_HEADERS_BAD: badInput,
  LUKS_BAD_JSON: badInput,
  LUKS_BAD_LAYOUT: badInput,
  LUKS_TRUNCATED: badInput,
  LUKS_KEYSLOT_OUT_OF_RANGE: usage,
  LUKS_KEYSLOT_INACTIVE: badInput,
  LUKS_KEYSLOTS_FULL: badInput,
  LUKS_LAST_KEYSLOT: badInput,
  LUKS_NO_KEYSLOT: wrongKey,
  LUKS_WRONG_PASSPHRASE: wrongKey,
  LUKS_UNKNOWN_KDF: badInput,
  LUKS_KDF_TOO_COSTLY: badInput,
  LUKS_UNSUPPORTED_CIPHER: unsupported,
  LUKS_UNSUPPORTED_HASH: unsupported,
  LUKS_UNSUPPORTED_REQUIREMENT: unsupported,
  LUKS_UNSUPPORTED_VERSION_OP: unsupported,
  LUKS_KEYFILE_TOO_LARGE: badInput,
  LUKS_TOKEN_NOT_FOUND: badInput,
  LUKS_BAD_TOKEN: badInput,
  LUKS_DEST_EXISTS: exists,
  LUKS_ABORTED: interrupted,
  LUKS_KDF_FAILED: failed,

  // The vault (src/vault). Names, ids and values the caller typed are usage errors; the rest is the vault refusing.
  VAULT_SECRET_NOT_FOUND: vault,
  VAULT_SECRET_DISABLED: vault,
  VAULT_SECRET_NOT_YET_VALID: vault,
  VAULT_SECRET_EXPIRED: vault,
  VAULT_KEY_NOT_FOUND: vault,
  VAULT_KEY_DISABLED: vault,
  VAULT_KEY_NOT_YET_VALID: vault,
  VAULT_KEY_EXPIRED: vault,
  VAULT_FORBIDDEN: vault,
  VAULT_UNAUTHENTICATED: vault,
  VAULT_AUTH_FAILED: vault,
  VAULT_UNREACHABLE: vault,
  VAULT_BAD_NAME: usage,
  VAULT_BAD_ID: usage,
  VAULT_BAD_ARGUMENT: usage,
  VAULT_INVALID_KEY: vault,
  VAULT_VALUE_TOO_LARGE: usage,
  VAULT_CONTENT_TYPE_TOO_LONG: usage,
  VAULT_TOO_MANY_TAGS: usage,
  VAULT_BAD_TAG: usage,
  VAULT_TAMPERED: vault,
  VAULT_WRONG_MASTER_KEY: vault,
  VAULT_PASSPHRASE_REQUIRED: vault,
  VAULT_KEY_FILE_PERMISSIONS: vault,
  VAULT_NOT_FOUND: vault,
  VAULT_ALREADY_EXISTS: vault,
  VAULT_NOT_FOR_DISK_ENCRYPTION: vault,
  VAULT_DELETED: vault,
  VAULT_NOT_DELETED: vault,
  VAULT_CONFLICT: vault,
  VAULT_PURGE_PROTECTED: vault,
  VAULT_BAD_BACKUP: vault,
  VAULT_UNWRAP_FAILED: vault,
  VAULT_NOT_A_DISK_SECRET: vault,
  VAULT_PRINCIPAL_NOT_FOUND: vault,
  VAULT_UNSUPPORTED_PROVIDER: unsupported,
  VAULT_UNSUPPORTED_ALGORITHM: unsupported,
  VAULT_STORAGE: vault,
  VAULT_CLOSED: failed,
  // The vault server (src/vault-server): its certificate and key files, and its listening address.
  VAULT_SERVER_TLS: badInput,
  VAULT_SERVER_LISTEN: failed,

  // Keys in a PKCS#11 token (src/pkcs11): the module, the token, its PIN, its keys and mechanisms.
  PKCS11_UNAVAILABLE: unsupported,
  PKCS11_NO_MODULE: usage,
  PKCS11_MODULE_LOAD_FAILED: badInput,
  PKCS11_BAD_URI: usage,
  PKCS11_BAD_PIN_SOURCE: usage,
  PKCS11_PIN_REQUIRED: wrongKey,
  PKCS11_PIN_INCORRECT: wrongKey,
  PKCS11_PIN_LOCKED: vault,
  PKCS11_TOKEN_NOT_FOUND: vault,
  PKCS11_KEY_NOT_FOUND: vault,
  PKCS11_AMBIGUOUS: usage,
  PKCS11_KEY_EXTRACTABLE: vault,
  PKCS11_KEY_EXISTS: exists,
  PKCS11_MECHANISM_UNSUPPORTED: unsupported,
  PKCS11_UNWRAP_FAILED: wrongKey,
  PKCS11_BAD_CERTIFICATE: badInput,
  PKCS11_FAILED: failed,

  // Whole-image jobs and streams (src/engine), and the volume layer they stand on (src/volume).
  ENGINE_BAD_ARGUMENT: usageEinval,
  ENGINE_DEST_EXISTS: exists,
  ENGINE_SAME_FILE: usage,
  ENGINE_TEMP_EXISTS: exists,
  ENGINE_NO_SPACE: { status: EXIT.exists, nbd: 'ENOSPC' },
  ENGINE_ABORTED: interrupted,
  ENGINE_WORKER_FAILED: failed,
  ENGINE_NO_JOURNAL: badInput,
  ENGINE_JOURNAL_MISMATCH: badInput,
  ENGINE_NO_KEY_SOURCE: usage,
  ENGINE_NOT_ENCRYPTED: badInput,
  ENGINE_ALREADY_ENCRYPTED: badInput,
  ENGINE_PLAINTEXT_NOT_CONFIRMED: usage,
  ENGINE_PLAINTEXT_REFUSED: usage,
  ENGINE_UNSUPPORTED_FORMAT: unsupported,
  ENGINE_UNSUPPORTED_SECTOR_SIZE: unsupported,
  ENGINE_HEADER_TOO_LARGE: badInput,
  ENGINE_STREAM_BAD_INPUT: badInput,
  ENGINE_STREAM_ORDER: usage,
  ENGINE_IO: failed,
  ENGINE_DELTA_MISMATCH: badInput,
  ENGINE_VERIFY_FAILED: badInput,

  // BitLocker volumes (src/bitlocker): read and decrypted, never written.
  BITLK_BAD_HEADER: badInput,
  BITLK_BAD_METADATA: badInput,
  BITLK_BAD_PARTITION_TABLE: badInput,
  BITLK_BAD_STARTUP_KEY: badInput,
  BITLK_BAD_RECOVERY_PASSWORD: usage,
  BITLK_BAD_ARGUMENT: usage,
  BITLK_NO_PROTECTOR: wrongKey,
  BITLK_WRONG_KEY: wrongKey,
  BITLK_NOT_A_BEK_SECRET: vault,
  BITLK_UNSUPPORTED_VISTA: unsupported,
  BITLK_UNSUPPORTED_STATE: unsupported,
  BITLK_UNSUPPORTED_EOW: unsupported,
  BITLK_UNSUPPORTED_CIPHER: unsupported,
  BITLK_UNSUPPORTED_SECTOR_SIZE: unsupported,

  // The fleet: jobs on a BullMQ queue in Redis (src/fleet).
  FLEET_BAD_ARGUMENT: usage,
  FLEET_BAD_REDIS_URL: usage,
  FLEET_BAD_JOB: usage,
  FLEET_BAD_MANIFEST: badInput,
  FLEET_JOB_NOT_FOUND: usage,
  FLEET_JOB_STATE: usage,
  FLEET_DEST_MISMATCH: exists,
  FLEET_CANCELLED: failed,
  FLEET_REDIS_FAILED: failed,
  FLEET_LISTEN_FAILED: failed,

  // NBD server and client (src/nbd).
  NBD_ALREADY_LISTENING: usage,
  NBD_NOT_LISTENING: usage,
  NBD_BAD_ARG: usageEinval,
  NBD_BAD_URI: usage,
  NBD_BAD_LAYOUT: badInput,
  NBD_OUT_OF_RANGE: { status: EXIT.badInput, nbd: 'EINVAL' },
  NBD_LISTEN_FAILED: failed,
  NBD_SOCKET_EXISTS: exists,
  NBD_CONNECT_FAILED: badInput,
  NBD_DISCONNECTED: badInput,
  NBD_PROTOCOL: badInput,
  NBD_NEGOTIATION_FAILED: badInput,
  NBD_EXPORT_UNKNOWN: badInput,
  NBD_NO_BLOCK_STATUS: badInput,
  NBD_REQUEST_FAILED: badInput,
  NBD_SERVER_ERROR: badInput,
  NBD_UNSUPPORTED_NEWSTYLE: unsupported,
  NBD_UNSUPPORTED_OLDSTYLE: unsupported,
  NBD_UNSUPPORTED_TLS: unsupported,
  NBD_TLS_PSK_FILE: badInput,
  NBD_TLS_PSK_FILE_EXPOSED: badInput,
  NBD_TLS_CERTIFICATES: badInput,
  NBD_TLS_CERTIFICATES_EXPOSED: badInput,
  NBD_TLS_HANDSHAKE: badInput,
  NBD_TLS_DISPOSED: usage,
  // The native reply thread (native/nbd_direct_read.cc): a failed system call, and arguments it refuses.
  NBD_NATIVE_IO: { status: EXIT.failed, nbd: 'EIO' },
  NBD_NATIVE_BAD_ARG: usageEinval,
} as const satisfies Record<string, ErrorCodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The codes of one part, by prefix: `CodesOf<'LUKS'>` is every `LUKS_...` code. */
export type CodesOf<P extends string> = Extract<ErrorCode, `${P}_${string}`>;

/** True when `code` is a declared code (a native addon or a peer may hand us any string). */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_CODES, code);
}

/** The exit status of a code (1 for a string that is not a declared code). */
export function exitStatusOf(code: string): ExitStatus {
  return isErrorCode(code) ? ERROR_CODES[code].status : EXIT.failed;
}

/** The NBD error value name a backing error with this code is answered with. */
export function nbdErrnoNameOf(code: string): NbdErrnoName {
  if (!isErrorCode(code)) return 'EIO';
  const spec: ErrorCodeSpec = ERROR_CODES[code];
  return spec.nbd ?? 'EIO';
}
