/**
 * How a process reaches a token: the module (a PKCS#11 shared library) and the user PIN.
 * The module comes from --pkcs11-module, else $VHDCRYPT_PKCS11_MODULE, else the URI's module-path.
 * The PIN comes from --pin-file (its first line) or $VHDCRYPT_PKCS11_PIN, never from an argument, and is
 * never printed. The bytes read here are this module's allocation: who resolves an access disposes of it.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Pkcs11Error } from './errors.js';

export const ENV_MODULE = 'VHDCRYPT_PKCS11_MODULE';
export const ENV_PIN = 'VHDCRYPT_PKCS11_PIN';
/** PKCS#11 PINs are short (ulMaxPinLen is typically 8-255); a PIN file larger than this is not one. */
const MAX_PIN_FILE_BYTES = 4096;

export interface Pkcs11Access {
  /** Path of the PKCS#11 module (else $VHDCRYPT_PKCS11_MODULE, else the URI's module-path). */
  readonly module?: string;
  /** The user PIN as UTF-8 bytes (else $VHDCRYPT_PKCS11_PIN at use). Never wiped by this code: the caller owns it. */
  readonly pin?: Uint8Array;
}

/** An access resolved from the command line's flags; dispose() wipes the PIN bytes read from the file. */
export interface ResolvedAccess extends Pkcs11Access {
  dispose(): void;
}

/** Read a PIN file: its first line, without the newline. */
export function readPinFile(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  let raw: Buffer | null = null;
  try {
    const size = fstatSync(fd).size;
    if (size > MAX_PIN_FILE_BYTES) throw new Pkcs11Error('PKCS11_BAD_PIN_SOURCE', `PIN file ${path} is ${size} bytes; a PIN file holds one short line`);
    raw = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, raw, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    let end = raw.subarray(0, got).indexOf(0x0a);
    if (end < 0) end = got;
    if (end > 0 && raw[end - 1] === 0x0d) end--;
    if (end === 0) throw new Pkcs11Error('PKCS11_BAD_PIN_SOURCE', `PIN file ${path} is empty`);
    return Uint8Array.from(raw.subarray(0, end));
  } finally {
    raw?.fill(0);
    closeSync(fd);
  }
}

/** The access the CLI's --pkcs11-module and --pin-file give (the environment fills the rest at use). */
export function resolveAccess(flags: { pkcs11Module?: string; pinFile?: string }): ResolvedAccess {
  const pin = flags.pinFile !== undefined ? readPinFile(flags.pinFile) : undefined;
  return {
    ...(flags.pkcs11Module !== undefined ? { module: flags.pkcs11Module } : {}),
    ...(pin ? { pin } : {}),
    dispose: () => pin?.fill(0),
  };
}

/** The module path to load for `uriModule` (the URI's module-path, if any). */
export function modulePathOf(access: Pkcs11Access | undefined, uriModule: string | undefined): string {
  const path = access?.module ?? (process.env[ENV_MODULE] || undefined) ?? uriModule;
  if (path === undefined || path === '') {
    throw new Pkcs11Error('PKCS11_NO_MODULE', `no PKCS#11 module: give --pkcs11-module PATH or set ${ENV_MODULE} (e.g. /usr/lib/softhsm/libsofthsm2.so)`);
  }
  return path;
}

/** The PIN bytes for a login: the access's own (not copied: the caller owns it), else a copy of the environment's. */
export function pinOf(access: Pkcs11Access | undefined): { bytes: Uint8Array; owned: boolean } | null {
  if (access?.pin !== undefined) return { bytes: access.pin, owned: false };
  const env = process.env[ENV_PIN];
  if (env === undefined || env === '') return null;
  return { bytes: Buffer.from(env, 'utf8'), owned: true };
}
