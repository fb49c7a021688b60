/**
 * Where a keyslot secret comes from: a passphrase, a passphrase file (one line), a key file (whole content).
 *
 * Who wipes what, in the whole volume layer: the code that allocates a secret wipes it, and nobody wipes a buffer
 * it was given. A caller's passphrase Uint8Array is copied before anything here could wipe it (userSecret), so
 * the caller's next call with the same buffer still opens its keyslot instead of one protected by zeros. What is
 * read from a file or unsealed from the vault was allocated here and is wiped here (wipeSecret, .fill(0)) on every
 * path, errors included; a volume key is allocated for the caller that asked for it (unlock, prepareEncryption)
 * and that caller wipes it.
 */
import { readFile, stat } from 'node:fs/promises';
import { MAX_KEYFILE_BYTES, type LuksSecret } from '../luks/index.js';
import { VolumeError } from './errors.js';

export interface KeySourceOptions {
  /** A passphrase (library callers). */
  readonly passphrase?: string | Uint8Array;
  /** A file whose first line is the passphrase (a trailing newline is not part of it). */
  readonly passphraseFile?: string;
  /** A key file: its whole content is the secret, as cryptsetup --key-file (plain: the raw key). */
  readonly keyFile?: string;
}

/** True when the caller gave a secret of their own (no vault needed). */
export function hasUserSecret(o: KeySourceOptions): boolean {
  return o.passphrase !== undefined || o.passphraseFile !== undefined || o.keyFile !== undefined;
}

/**
 * The caller's secret as the LUKS library takes it, or null. Passphrase bytes
 * are always a copy made here (the caller's own Uint8Array is copied, never
 * handed on), so whoever gets the result wipes it with wipeSecret without
 * zeroing a buffer the caller still uses.
 */
export async function userSecret(o: KeySourceOptions): Promise<LuksSecret | null> {
  const given = [o.passphrase, o.passphraseFile, o.keyFile].filter((x) => x !== undefined).length;
  if (given > 1) throw new VolumeError('ENGINE_BAD_ARGUMENT', 'give one of passphrase, passphraseFile and keyFile');
  if (o.passphrase !== undefined) {
    if (typeof o.passphrase === 'string') return { passphrase: o.passphrase };
    if (!(o.passphrase instanceof Uint8Array)) throw new VolumeError('ENGINE_BAD_ARGUMENT', 'passphrase expected a string or Uint8Array');
    return { passphrase: Uint8Array.from(o.passphrase) };
  }
  if (o.keyFile !== undefined) return { keyFile: o.keyFile };
  if (o.passphraseFile !== undefined) {
    const size = (await stat(o.passphraseFile)).size;
    if (size > MAX_KEYFILE_BYTES) throw new VolumeError('ENGINE_BAD_ARGUMENT', `passphrase file ${o.passphraseFile} is ${size} bytes; the ceiling is ${MAX_KEYFILE_BYTES}`);
    const raw = new Uint8Array(await readFile(o.passphraseFile));
    let n = raw.indexOf(0x0a);
    if (n < 0) n = raw.length;
    if (n > 0 && raw[n - 1] === 0x0d) n--;
    const pass = raw.slice(0, n);
    raw.fill(0);
    if (pass.length === 0) throw new VolumeError('ENGINE_BAD_ARGUMENT', `passphrase file ${o.passphraseFile} is empty`);
    return { passphrase: pass };
  }
  return null;
}

/** Wipe the passphrase bytes of a secret userSecret or the vault made (never a caller's own buffer). */
export function wipeSecret(s: LuksSecret | null): void {
  if (s && 'passphrase' in s && s.passphrase instanceof Uint8Array) s.passphrase.fill(0);
}

/** Plain mode with a key file: the first keyBytes of the file are the key (cryptsetup plain, --hash plain). */
export async function plainKeyFromFile(path: string, keyBytes: number): Promise<Uint8Array> {
  const size = (await stat(path)).size;
  if (size > MAX_KEYFILE_BYTES) throw new VolumeError('ENGINE_BAD_ARGUMENT', `key file ${path} is ${size} bytes; the ceiling is ${MAX_KEYFILE_BYTES}`);
  const raw = new Uint8Array(await readFile(path));
  try {
    if (raw.length < keyBytes) {
      throw new VolumeError('ENGINE_BAD_ARGUMENT', `key file ${path} has ${raw.length} bytes; plain mode needs ${keyBytes} bytes of key`);
    }
    return raw.slice(0, keyBytes);
  } finally {
    raw.fill(0);
  }
}
