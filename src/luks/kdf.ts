/**
 * Key derivation for keyslots and digests: PBKDF2 (node:crypto) and Argon2i/id
 * (@node-rs/argon2, version 0x13 as cryptsetup uses), with cost ceilings that a
 * hostile header cannot exceed.
 */
import { pbkdf2 } from 'node:crypto';
import { LuksError } from './errors.js';
import { deriveInChild, type KdfChildRequest } from './kdf-child.js';

export type LuksHash = 'sha1' | 'sha256' | 'sha512';
export const LUKS_HASHES: readonly LuksHash[] = ['sha1', 'sha256', 'sha512'];

export type KdfParams =
  | { readonly type: 'pbkdf2'; readonly hash: LuksHash; readonly iterations: number; readonly salt: Uint8Array }
  | {
      readonly type: 'argon2i' | 'argon2id';
      readonly time: number;
      /** Memory cost in KiB. */
      readonly memory: number;
      /** Lanes ("cpus" in LUKS2 JSON). */
      readonly cpus: number;
      readonly salt: Uint8Array;
    };

/** KDF choice for new keyslots (the salt is generated). */
export type KdfOptions =
  | { readonly type: 'pbkdf2'; readonly hash?: LuksHash; readonly iterations: number }
  | { readonly type: 'argon2i' | 'argon2id'; readonly time: number; readonly memoryKiB: number; readonly parallelism: number };

/**
 * For passphrases people type: argon2id at cryptsetup's default memory (1 GiB)
 * and lanes (4), with time cost 4 (cryptsetup's minimum argon2 time) instead
 * of a per-machine 2 s benchmark, so the cost is the same everywhere.
 */
export const KDF_TYPED_PASSPHRASE: KdfOptions = { type: 'argon2id', time: 4, memoryKiB: 1048576, parallelism: 4 };

/** For random 256-bit secrets kept in a vault: the entropy is in the secret; 1000 is cryptsetup's minimum. */
export const KDF_RANDOM_SECRET: KdfOptions = { type: 'pbkdf2', hash: 'sha256', iterations: 1000 };

/** Ceilings on the work a header may ask for; above them unlock refuses with LUKS_KDF_TOO_COSTLY. */
export interface KdfLimits {
  /** Per keyslot (or digest); every ceiling is an inclusive maximum. */
  readonly maxPbkdf2Iterations: number;
  readonly maxArgon2MemoryKiB: number;
  readonly maxArgon2Time: number;
  readonly maxArgon2Parallelism: number;
  /** memory (KiB) x time: the total memory filled, which sets the run time. */
  readonly maxArgon2Work: number;
  /**
   * Per unlock attempt, across keyslots, in work units (kdfWork): the keyslot
   * KDFs and digest checks of every keyslot tried. A keyslot whose cost would
   * take the attempt past it is not started (see tryKeyslots).
   */
  readonly maxUnlockWork: number;
}

/**
 * Defaults: PBKDF2 2^25 iterations (seconds of SHA-256 on a current core, several
 * times what a 2 s cryptsetup benchmark yields); Argon2 memory 2 GiB (below cryptsetup's 4 GiB
 * maximum: a 4 GiB keyslot filled 4.27 GB of RSS), time 100, lanes 16, and
 * memory x time 32 GiB (1 GiB x 32 passes). Per attempt 2^28 units: 8
 * KDF_TYPED_PASSPHRASE keyslots with their digests (2^27 units and a little),
 * or 2 keyslots at the argon2 ceiling, about a minute of one core here.
 */
export const DEFAULT_KDF_LIMITS: KdfLimits = {
  maxPbkdf2Iterations: 2 ** 25,
  maxArgon2MemoryKiB: 2 * 1024 * 1024,
  maxArgon2Time: 100,
  maxArgon2Parallelism: 16,
  maxArgon2Work: 32 * 1024 * 1024,
  maxUnlockWork: 2 ** 28,
};

/** Output bytes of one PBKDF2 block (the hash length): PBKDF2 runs its iterations once per block (RFC 8018 §5.2). */
const HASH_BYTES: Record<LuksHash, number> = { sha1: 20, sha256: 32, sha512: 64 };

/**
 * The cost of deriving `length` bytes, in work units: one unit is one
 * PBKDF2-HMAC iteration of one output block with SHA-1 or SHA-256 (two
 * compression calls); SHA-512 counts 2 (about twice the time per iteration); one
 * argon2 block of 1 KiB filled once (memory KiB x time) counts 4 (about the ratio
 * of node:crypto's SHA-256 iterations per second to @node-rs/argon2's KiB blocks
 * per second on one lane). Lanes spread argon2 over cores, not less work.
 */
export function kdfWork(p: KdfParams, length: number): number {
  if (p.type === 'pbkdf2') return p.iterations * Math.ceil(length / HASH_BYTES[p.hash]) * (p.hash === 'sha512' ? 2 : 1);
  return p.memory * p.time * 4;
}

/** Throws LUKS_KDF_TOO_COSTLY / LUKS_BAD_HEADER when params are absurd; `what` names the keyslot or digest. */
export function checkKdfCost(p: KdfParams, limits: KdfLimits, what: string): void {
  if (p.type === 'pbkdf2') {
    if (!Number.isSafeInteger(p.iterations) || p.iterations < 1) {
      throw new LuksError('LUKS_BAD_HEADER', `${what}: PBKDF2 iterations ${p.iterations} invalid`);
    }
    if (p.iterations > limits.maxPbkdf2Iterations) {
      throw new LuksError('LUKS_KDF_TOO_COSTLY', `${what}: PBKDF2 iterations ${p.iterations} exceed the ceiling ${limits.maxPbkdf2Iterations}`);
    }
    return;
  }
  for (const [name, v] of [['time', p.time], ['memory', p.memory], ['cpus', p.cpus]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new LuksError('LUKS_BAD_HEADER', `${what}: ${p.type} ${name} ${v} invalid`);
  }
  const over = (field: string, v: number, max: number) =>
    new LuksError('LUKS_KDF_TOO_COSTLY', `${what}: ${p.type} ${field} ${v} exceeds the ceiling ${max}`);
  if (p.memory > limits.maxArgon2MemoryKiB) throw over('memory (KiB)', p.memory, limits.maxArgon2MemoryKiB);
  if (p.time > limits.maxArgon2Time) throw over('time', p.time, limits.maxArgon2Time);
  if (p.cpus > limits.maxArgon2Parallelism) throw over('parallelism', p.cpus, limits.maxArgon2Parallelism);
  if (p.memory * p.time > limits.maxArgon2Work) throw over('memory x time', p.memory * p.time, limits.maxArgon2Work);
  if (p.memory < 8 * p.cpus) throw new LuksError('LUKS_BAD_HEADER', `${what}: ${p.type} memory ${p.memory} KiB below 8 KiB per lane`);
}

/** @node-rs/argon2 options for p (one place: the in-process call and the KDF child both take them). */
export function argon2Options(p: Extract<KdfParams, { type: 'argon2i' | 'argon2id' }>, length: number) {
  return {
    memoryCost: p.memory,
    timeCost: p.time,
    parallelism: p.cpus,
    outputLen: length,
    // Literal values of @node-rs/argon2's const enums Algorithm (1 Argon2i, 2 Argon2id) and Version (1 = 0x13).
    algorithm: (p.type === 'argon2i' ? 1 : 2) as never,
    version: 1 as never,
  };
}

/**
 * Work above which a KDF with an AbortSignal runs in a child process that abort
 * kills (about a quarter of a second of one core). Below it the KDF runs in this process (a node:crypto or
 * @node-rs/argon2 call on the libuv pool, which nothing can stop once started)
 * and abort is seen when it returns, well within a second.
 */
export const IN_PROCESS_MAX_WORK = 2 ** 20;

/** The LUKS_ABORTED error for an aborted signal, naming its reason. */
export function abortedKdf(signal: AbortSignal, what: string): LuksError {
  const r: unknown = signal.reason;
  const why = r instanceof Error ? r.message : r !== undefined ? String(r) : 'aborted';
  return new LuksError('LUKS_ABORTED', `${what}: key derivation aborted (${why})`);
}

function pbkdf2Async(secret: Uint8Array, salt: Uint8Array, iterations: number, length: number, hash: LuksHash): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    pbkdf2(secret, salt, iterations, length, hash, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

async function deriveInProcess(p: KdfParams, secret: Uint8Array, length: number, what: string): Promise<Uint8Array> {
  if (p.type === 'pbkdf2') return pbkdf2Async(secret, p.salt, p.iterations, length, p.hash);
  // Loaded on first use: its addon's start-up is a cost PBKDF2 keyslots never need.
  const { hashRaw } = await import('@node-rs/argon2');
  try {
    return await hashRaw(secret, { salt: p.salt, ...argon2Options(p, length) });
  } catch (e) {
    throw new LuksError('LUKS_BAD_HEADER', `${what}: ${p.type} refused its parameters (${(e as Error).message})`, { cause: e });
  }
}

/**
 * Derives `length` bytes; the caller wipes the result. Checks the cost first.
 * With a signal, abort rejects with LUKS_ABORTED within a second: a KDF above
 * IN_PROCESS_MAX_WORK runs in a child process that abort kills.
 */
export async function deriveKey(p: KdfParams, secret: Uint8Array, length: number, limits: KdfLimits, what: string, signal?: AbortSignal): Promise<Uint8Array> {
  checkKdfCost(p, limits, what);
  if (signal === undefined) return deriveInProcess(p, secret, length, what);
  if (signal.aborted) throw abortedKdf(signal, what);
  if (kdfWork(p, length) > IN_PROCESS_MAX_WORK) {
    const salt = Buffer.from(p.salt).toString('base64');
    const request: KdfChildRequest =
      p.type === 'pbkdf2'
        ? { type: 'pbkdf2', salt, iterations: p.iterations, length, hash: p.hash }
        : { type: 'argon2', salt, options: argon2Options(p, length) };
    return deriveInChild(request, secret, length, `${what}: ${p.type}`, () => abortedKdf(signal, what), signal);
  }
  const key = await deriveInProcess(p, secret, length, what);
  if (signal.aborted) {
    key.fill(0);
    throw abortedKdf(signal, what);
  }
  return key;
}

/** Validates KdfOptions given by a caller for a new keyslot. */
export function checkKdfOptions(k: KdfOptions): void {
  if (k === null || typeof k !== 'object') throw new LuksError('LUKS_BAD_ARG', 'kdf options required');
  if (k.type === 'pbkdf2') {
    if (!Number.isSafeInteger(k.iterations) || k.iterations < 1000) {
      throw new LuksError('LUKS_BAD_ARG', `pbkdf2 iterations must be an integer >= 1000 (cryptsetup's minimum), got ${k.iterations}`);
    }
    if (k.hash !== undefined && !LUKS_HASHES.includes(k.hash)) throw new LuksError('LUKS_UNSUPPORTED_HASH', `hash ${String(k.hash)} unsupported`);
    return;
  }
  if (k.type === 'argon2i' || k.type === 'argon2id') {
    // cryptsetup's bounds: time >= 4, memory from 32 KiB, parallel 1..4 is its default range.
    if (!Number.isSafeInteger(k.time) || k.time < 4) throw new LuksError('LUKS_BAD_ARG', `argon2 time must be >= 4, got ${k.time}`);
    // Up to the default unlock ceiling, not cryptsetup's 4 GiB: a new keyslot must open with default limits.
    const maxMemory = DEFAULT_KDF_LIMITS.maxArgon2MemoryKiB;
    if (!Number.isSafeInteger(k.memoryKiB) || k.memoryKiB < 32 || k.memoryKiB > maxMemory) {
      throw new LuksError('LUKS_BAD_ARG', `argon2 memory must be 32..${maxMemory} KiB, got ${k.memoryKiB}`);
    }
    if (!Number.isSafeInteger(k.parallelism) || k.parallelism < 1 || k.parallelism > 16) {
      throw new LuksError('LUKS_BAD_ARG', `argon2 parallelism must be 1..16, got ${k.parallelism}`);
    }
    return;
  }
  throw new LuksError('LUKS_UNKNOWN_KDF', `kdf type ${String((k as { type?: unknown }).type)} unknown`);
}

/** Params with a fresh salt for a new keyslot. */
export function kdfParamsFor(k: KdfOptions, salt: Uint8Array): KdfParams {
  checkKdfOptions(k);
  return k.type === 'pbkdf2'
    ? { type: 'pbkdf2', hash: k.hash ?? 'sha256', iterations: k.iterations, salt }
    : { type: k.type, time: k.time, memory: k.memoryKiB, cpus: k.parallelism, salt };
}
