/**
 * The vault master key. Two sources, fixed when the vault is created:
 * - key file (default): 32 random bytes in `master.key` beside the database,
 *   mode 0600. It protects a copy of the database alone (a backup, a stolen
 *   disk image of just the vault file); it does not protect against anyone who
 *   can read the key file, i.e. the local user and root.
 * - passphrase: $VHDCRYPT_VAULT_PASSPHRASE (or the credentials' passphrase)
 *   through argon2id. Production cost: 64 MiB, 3 passes, 4 lanes (RFC 9106 §4,
 *   second recommended option); tests lower it with VHDCRYPT_VAULT_KDF_MEMORY_KIB
 *   and VHDCRYPT_VAULT_KDF_ITERATIONS, read only when a vault is created.
 */
import { closeSync, fstatSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { VaultError } from '../errors.js';
import { PRODUCTION_KDF } from './defaults.js';

export const MASTER_KEY_BYTES = 32;
export const KEY_FILE_NAME = 'master.key';

export interface KdfParams {
  readonly salt: string; // base64
  readonly memoryKiB: number;
  readonly iterations: number;
  readonly parallelism: number;
}

// Ceilings for parameters read from a (possibly hostile) vault file: 4 GiB, 64 passes, 16 lanes.
const MAX_MEMORY_KIB = 4 * 1024 * 1024;
const MAX_ITERATIONS = 64;
const MAX_PARALLELISM = 16;

/** Fresh argon2id parameters for a new vault (env overrides for tests). */
export function newKdfParams(override?: Partial<Omit<KdfParams, 'salt'>>): KdfParams {
  const envInt = (name: string): number | undefined => {
    const v = process.env[name];
    if (v === undefined || v === '') return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new VaultError('VAULT_BAD_ARGUMENT', `${name} must be a positive integer`);
    return n;
  };
  return {
    salt: randomBytes(16).toString('base64'),
    memoryKiB: override?.memoryKiB ?? envInt('VHDCRYPT_VAULT_KDF_MEMORY_KIB') ?? PRODUCTION_KDF.memoryKiB,
    iterations: override?.iterations ?? envInt('VHDCRYPT_VAULT_KDF_ITERATIONS') ?? PRODUCTION_KDF.iterations,
    parallelism: override?.parallelism ?? PRODUCTION_KDF.parallelism,
  };
}

/** argon2id(passphrase) -> 32-byte master key; refuses out-of-range stored parameters. */
export async function deriveMasterKey(passphrase: string, p: KdfParams): Promise<Buffer> {
  const ok = (n: unknown, lo: number, hi: number): boolean => Number.isInteger(n) && (n as number) >= lo && (n as number) <= hi;
  if (!ok(p.memoryKiB, 8, MAX_MEMORY_KIB) || !ok(p.iterations, 1, MAX_ITERATIONS) || !ok(p.parallelism, 1, MAX_PARALLELISM)
    || p.memoryKiB < 8 * p.parallelism || typeof p.salt !== 'string') {
    throw new VaultError('VAULT_TAMPERED', 'vault KDF parameters are out of range');
  }
  const salt = Buffer.from(p.salt, 'base64');
  if (salt.length < 16) throw new VaultError('VAULT_TAMPERED', 'vault KDF salt is too short');
  // Async: argon2 runs on libuv's pool, not on the event loop. Loaded here only: key-file vaults never need it.
  const { Algorithm, hashRaw } = await import('@node-rs/argon2');
  return hashRaw(Buffer.from(passphrase, 'utf8'), {
    algorithm: Algorithm.Argon2id,
    memoryCost: p.memoryKiB,
    timeCost: p.iterations,
    parallelism: p.parallelism,
    outputLen: MASTER_KEY_BYTES,
    salt,
  });
}

/**
 * Create the key file if absent (temp file, fsync, hard link: a concurrent
 * creator's file wins intact), then read it.
 */
export function createOrReadKeyFile(dir: string): Buffer {
  const path = join(dir, KEY_FILE_NAME);
  const tmp = join(dir, `.${KEY_FILE_NAME}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const key = randomBytes(MASTER_KEY_BYTES);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, key);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
    key.fill(0);
  }
  try {
    linkSync(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  } finally {
    unlinkSync(tmp);
  }
  syncDir(dir);
  return readKeyFile(dir);
}

/** Read the key file; refuses one readable by group/others (as ssh does) or of the wrong size. */
export function readKeyFile(dir: string): Buffer {
  const path = join(dir, KEY_FILE_NAME);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new VaultError('VAULT_NOT_FOUND', `the vault master key file ${path} is missing`);
    throw new VaultError('VAULT_STORAGE', `cannot open ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const st = fstatSync(fd);
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      throw new VaultError('VAULT_KEY_FILE_PERMISSIONS', `${path} is accessible to group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    if (st.size !== MASTER_KEY_BYTES) throw new VaultError('VAULT_WRONG_MASTER_KEY', `${path} is ${st.size} bytes, not a ${MASTER_KEY_BYTES}-byte master key`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
