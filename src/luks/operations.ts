/** The public LUKS operations, on header bytes in memory or a file/device path (positional I/O). */
import { LuksError } from './errors.js';
import { withHeaderIo, type HeaderIo, type LuksTarget } from './header-io.js';
import { DEFAULT_KDF_LIMITS, kdfParamsFor, type KdfLimits, type KdfOptions } from './kdf.js';
import { randomBytes } from 'node:crypto';
import { secretBytes, type LuksSecret } from './secret-input.js';
import { LUKS1_KEYSLOTS } from './luks1-header.js';
import { luks1ActiveSlots, luks1Format, luks1KillKeyslot, luks1SetKeyslot, luks1Unlock } from './luks1.js';
import { luks2AddToken, luks2Format, luks2FreeKeyslot, luks2KillKeyslot, luks2RemoveToken, luks2SetKeyslot, luks2Unlock, writeLuks2 } from './luks2.js';
import { readLuksHeader, volumeInfoOf, type LuksHeader, type LuksVolumeInfo } from './volume-info.js';
import type { JsonObject, LuksToken } from './luks2-json.js';

export interface FormatOptions {
  readonly version: 1 | 2;
  readonly keyBits: 256 | 512;
  /** 512 (LUKS1 only has 512) or 4096; default 512 for LUKS1, 4096 for LUKS2 (cryptsetup 2.6 on 4K devices). */
  readonly sectorSize?: 512 | 4096;
  /** Payload offset in bytes; default 2 MiB (LUKS1) or 16 MiB (LUKS2), as cryptsetup. */
  readonly dataOffset?: bigint;
  /** Required: KDF_TYPED_PASSPHRASE, KDF_RANDOM_SECRET or explicit parameters. */
  readonly kdf: KdfOptions;
  /** LUKS2 metadata size (hdr_size), default 16384. */
  readonly metadataSize?: number;
  /** LUKS2 segment size; default 'dynamic'. */
  readonly segmentSize?: bigint | 'dynamic';
  readonly label?: string;
  readonly subsystem?: string;
}

export interface UnlockOptions {
  /** Try this keyslot first. */
  readonly keyslot?: number;
  /** Ceilings on header-requested KDF cost, per keyslot and per attempt (default DEFAULT_KDF_LIMITS). */
  readonly limits?: KdfLimits;
  /** Stops the attempt within a second, even inside a KDF, with LUKS_ABORTED. */
  readonly signal?: AbortSignal;
}

/** A new volume's header region (write it at offset 0; its length is the data offset) and its volume key (caller wipes). */
export async function format(
  volumeSize: bigint,
  opts: FormatOptions & LuksSecret,
): Promise<{ header: Uint8Array; volumeKey: Uint8Array; info: LuksVolumeInfo }> {
  if (typeof volumeSize !== 'bigint' || volumeSize <= 0n) throw new LuksError('LUKS_BAD_ARG', 'volumeSize expected a positive bigint (bytes)');
  if (opts.keyBits !== 256 && opts.keyBits !== 512) throw new LuksError('LUKS_UNSUPPORTED_CIPHER', `aes-xts-plain64 with ${String(opts.keyBits)}-bit keys unsupported; 256 or 512`);
  const keyBytes = (opts.keyBits / 8) as 32 | 64;
  const secret = await secretBytes(opts);
  try {
    if (opts.version === 1) {
      if (opts.sectorSize !== undefined && opts.sectorSize !== 512) throw new LuksError('LUKS_BAD_ARG', 'LUKS1 has 512-byte sectors only');
      const r = await luks1Format({ volumeSize, keyBytes, dataOffset: opts.dataOffset, kdf: opts.kdf }, secret);
      return { header: r.header, volumeKey: r.volumeKey, info: volumeInfoOf({ version: 1, phdr: r.headerInfo }) };
    }
    if (opts.version === 2) {
      const r = await luks2Format(
        {
          volumeSize,
          keyBytes,
          sectorSize: opts.sectorSize ?? 4096,
          dataOffset: opts.dataOffset,
          metadataSize: opts.metadataSize,
          segmentSize: opts.segmentSize,
          kdf: opts.kdf,
          label: opts.label,
          subsystem: opts.subsystem,
        },
        secret,
      );
      return { header: r.header, volumeKey: r.volumeKey, info: volumeInfoOf({ version: 2, state: r.state }) };
    }
    throw new LuksError('LUKS_BAD_VERSION', `version ${String(opts.version)}; 1 or 2`);
  } finally {
    secret.fill(0);
  }
}

/** The parsed volume facts of a header (no secret needed). */
export async function readVolumeInfo(target: LuksTarget): Promise<LuksVolumeInfo> {
  return withHeaderIo(target, false, async (io) => volumeInfoOf(await readLuksHeader(io)));
}

async function unlockHeader(io: HeaderIo, h: LuksHeader, secret: Uint8Array, opts: UnlockOptions): Promise<{ volumeKey: Uint8Array; keyslot: number }> {
  return h.version === 1 ? luks1Unlock(io, h.phdr, secret, opts) : luks2Unlock(io, h.state, secret, opts);
}

/**
 * Tries the active keyslots (opts.keyslot first, then LUKS2 priority order) while
 * their KDF work fits limits.maxUnlockWork, verifies the digest, returns the
 * volume key (caller wipes).
 */
export async function unlock(
  target: LuksTarget,
  secret: LuksSecret,
  opts: UnlockOptions = {},
): Promise<{ volumeKey: Uint8Array; keyslot: number; info: LuksVolumeInfo }> {
  return withHeaderIo(target, false, async (io) => {
    const h = await readLuksHeader(io);
    const info = volumeInfoOf(h);
    const s = await secretBytes(secret);
    try {
      const r = await unlockHeader(io, h, s, opts);
      return { ...r, info };
    } finally {
      s.fill(0);
    }
  });
}

export interface KeyslotWriteOptions extends UnlockOptions {
  /** KDF of the new keyslot. */
  readonly kdf: KdfOptions;
  /** Id for the new keyslot (addKeyslot); default: the lowest free one. */
  readonly newKeyslot?: number;
}

function luks1FreeSlot(h: Extract<LuksHeader, { version: 1 }>, want: number | undefined): number {
  const active = luks1ActiveSlots(h.phdr);
  if (want !== undefined) {
    if (!Number.isInteger(want) || want < 0 || want >= LUKS1_KEYSLOTS) throw new LuksError('LUKS_KEYSLOT_OUT_OF_RANGE', `keyslot ${want} out of range 0..7`);
    if (active.includes(want)) throw new LuksError('LUKS_BAD_ARG', `keyslot ${want} is in use`);
    return want;
  }
  for (let i = 0; i < LUKS1_KEYSLOTS; i++) if (!active.includes(i)) return i;
  throw new LuksError('LUKS_KEYSLOTS_FULL', 'all 8 LUKS1 keyslots are in use');
}

async function withUnlocked<T>(
  target: LuksTarget,
  existing: LuksSecret,
  opts: UnlockOptions,
  fn: (io: HeaderIo, h: LuksHeader, volumeKey: Uint8Array, keyslot: number) => Promise<T>,
): Promise<T> {
  return withHeaderIo(target, true, async (io) => {
    const h = await readLuksHeader(io);
    volumeInfoOf(h);
    const s = await secretBytes(existing);
    let vk: Uint8Array | null = null;
    try {
      const r = await unlockHeader(io, h, s, opts);
      vk = r.volumeKey;
      return await fn(io, h, vk, r.keyslot);
    } finally {
      s.fill(0);
      vk?.fill(0);
    }
  });
}

/** Adds a keyslot for `added`, unlocking with `existing`; returns the new keyslot id. */
export async function addKeyslot(target: LuksTarget, existing: LuksSecret, added: LuksSecret, opts: KeyslotWriteOptions): Promise<number> {
  return withUnlocked(target, existing, opts, async (io, h, vk) => {
    const s = await secretBytes(added);
    try {
      const limits = opts.limits ?? DEFAULT_KDF_LIMITS;
      if (h.version === 1) {
        const id = luks1FreeSlot(h, opts.newKeyslot);
        await luks1SetKeyslot(io, h.phdr, id, vk, s, luks1Kdf(h, opts.kdf), limits);
        return id;
      }
      const id = luks2FreeKeyslot(h.state, opts.newKeyslot);
      await luks2SetKeyslot(io, h.state, id, vk, s, opts.kdf, limits);
      return id;
    } finally {
      s.fill(0);
    }
  });
}

function luks1Kdf(h: Extract<LuksHeader, { version: 1 }>, kdf: KdfOptions) {
  if (kdf.type !== 'pbkdf2') throw new LuksError('LUKS_BAD_ARG', `LUKS1 keyslots use pbkdf2, not ${kdf.type}`);
  if (kdf.hash !== undefined && kdf.hash !== h.phdr.hashSpec) throw new LuksError('LUKS_BAD_ARG', `LUKS1 keyslots use the header hash ${h.phdr.hashSpec}`);
  return kdfParamsFor({ ...kdf, hash: h.phdr.hashSpec as 'sha1' | 'sha256' | 'sha512' }, randomBytes(32));
}

/** Replaces the passphrase of the keyslot that `oldSecret` opens; returns that keyslot id. */
export async function changePassphrase(target: LuksTarget, oldSecret: LuksSecret, newSecret: LuksSecret, opts: KeyslotWriteOptions): Promise<number> {
  return withUnlocked(target, oldSecret, opts, async (io, h, vk, slot) => {
    const s = await secretBytes(newSecret);
    try {
      const limits = opts.limits ?? DEFAULT_KDF_LIMITS;
      if (h.version === 1) await luks1SetKeyslot(io, h.phdr, slot, vk, s, luks1Kdf(h, opts.kdf), limits);
      else await luks2SetKeyslot(io, h.state, slot, vk, s, opts.kdf, limits);
      return slot;
    } finally {
      s.fill(0);
    }
  });
}

/**
 * Removes a keyslot and destroys its key material (like `cryptsetup luksKillSlot
 * --batch-mode`). Removing the last keyslot makes the volume unrecoverable and
 * needs { force: true }.
 */
export async function removeKeyslot(target: LuksTarget, keyslot: number, opts: { force?: boolean } = {}): Promise<void> {
  await withHeaderIo(target, true, async (io) => {
    const h = await readLuksHeader(io);
    const max = h.version === 1 ? LUKS1_KEYSLOTS : 32;
    if (!Number.isInteger(keyslot) || keyslot < 0 || keyslot >= max) throw new LuksError('LUKS_KEYSLOT_OUT_OF_RANGE', `keyslot ${keyslot} out of range 0..${max - 1}`);
    const active = h.version === 1 ? luks1ActiveSlots(h.phdr) : h.state.meta.keyslots.map((k) => k.id);
    if (!active.includes(keyslot)) throw new LuksError('LUKS_KEYSLOT_INACTIVE', `keyslot ${keyslot} is not active`);
    if (active.length === 1 && !opts.force) throw new LuksError('LUKS_LAST_KEYSLOT', `keyslot ${keyslot} is the last one; removing it loses the data (pass force)`);
    if (h.version === 1) await luks1KillKeyslot(io, h.phdr, keyslot);
    else await luks2KillKeyslot(io, h.state, keyslot);
  });
}

async function withLuks2<T>(target: LuksTarget, writable: boolean, fn: (io: HeaderIo, h: Extract<LuksHeader, { version: 2 }>) => Promise<T>): Promise<T> {
  return withHeaderIo(target, writable, async (io) => {
    const h = await readLuksHeader(io);
    if (h.version !== 2) throw new LuksError('LUKS_UNSUPPORTED_VERSION_OP', 'tokens exist in LUKS2 only');
    return fn(io, h);
  });
}

/** The tokens of a LUKS2 header (LUKS1 has none). */
export async function listTokens(target: LuksTarget): Promise<readonly LuksToken[]> {
  return withHeaderIo(target, false, async (io) => {
    const h = await readLuksHeader(io);
    return h.version === 2 ? h.state.meta.tokens : [];
  });
}

/** Adds a token ({ type, keyslots: ['0'], ... }); returns its id. */
export async function addToken(target: LuksTarget, token: JsonObject, opts: { id?: number } = {}): Promise<number> {
  return withLuks2(target, true, async (io, h) => (await luks2AddToken(io, h.state, token, opts.id)).id);
}

export async function removeToken(target: LuksTarget, id: number): Promise<void> {
  await withLuks2(target, true, async (io, h) => void (await luks2RemoveToken(io, h.state, id)));
}

/** The token telling which vault secret opens which keyslot. */
export function vaultToken(t: { keyslot: number; vault: string; secret: string }): JsonObject {
  return { type: 'vhdcrypt-vault', keyslots: [String(t.keyslot)], vault: t.vault, secret: t.secret };
}

/**
 * Rewrites both LUKS2 header copies from the valid, newest one when the other is
 * damaged or stale (every other LUKS2 write does the same). LUKS1 has one copy.
 */
export async function repairHeader(target: LuksTarget): Promise<{ repaired: boolean; problems: readonly string[] }> {
  return withHeaderIo(target, true, async (io) => {
    const h = await readLuksHeader(io);
    if (h.version === 1 || !h.state.needsRepair) return { repaired: false, problems: [] };
    await writeLuks2(io, h.state, h.state.meta.raw);
    return { repaired: true, problems: h.state.problems };
  });
}

