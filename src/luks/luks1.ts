/** LUKS1 volumes: unlock, format and keyslot changes over a HeaderIo (LUKS1 spec §3-4). */
import { pbkdf2Sync, randomBytes, randomFillSync, randomUUID } from 'node:crypto';
import { LuksError } from './errors.js';
import { openHeaderIo, type HeaderIo } from './header-io.js';
import { DEFAULT_KDF_LIMITS, checkKdfCost, kdfParamsFor, type KdfLimits, type KdfOptions, type KdfParams, type LuksHash } from './kdf.js';
import { LUKS_STRIPES, checkCipher, keyslotAttempt, sealKeyslot, type KeyslotGeometry } from './keyslot-material.js';
import { keyslotOrder, tryKeyslots, type UnlockAttempt } from './keyslot-order.js';
import {
  LUKS1_DIGEST_BYTES,
  LUKS1_KEYSLOTS,
  LUKS1_KEY_DISABLED,
  LUKS1_KEY_ENABLED,
  LUKS1_PHDR_SIZE,
  SECTOR,
  checkLuks1Layout,
  decodeLuks1Header,
  encodeLuks1Header,
  isLuks1Hash,
  luks1AreaBytes,
  luks1CipherSpec,
  type Luks1Header,
  type Luks1Keyslot,
} from './luks1-header.js';

/** Reads and decodes the phdr at offset 0. */
export async function readLuks1(io: HeaderIo): Promise<Luks1Header> {
  return decodeLuks1Header(await io.read(0, LUKS1_PHDR_SIZE, 'LUKS1 header'));
}

/** Throws unless this header is one we can open: aes-xts-plain64 256/512, sha1/sha256/sha512. */
export function checkLuks1Supported(h: Luks1Header): void {
  checkCipher(luks1CipherSpec(h), h.keyBytes, 'LUKS1 header');
  if (!isLuks1Hash(h.hashSpec)) throw new LuksError('LUKS_UNSUPPORTED_HASH', `LUKS1 hash ${JSON.stringify(h.hashSpec)} unsupported; sha1, sha256 or sha512 are`);
}

function geometry(h: Luks1Header, ks: Luks1Keyslot): KeyslotGeometry {
  if (!isLuks1Hash(h.hashSpec)) throw new LuksError('LUKS_UNSUPPORTED_HASH', `hash ${h.hashSpec} unsupported`);
  return {
    what: `keyslot ${ks.index}`,
    kdf: { type: 'pbkdf2', hash: h.hashSpec, iterations: ks.iterations, salt: ks.salt },
    areaKeyBytes: h.keyBytes,
    areaOffset: ks.keyMaterialOffset * SECTOR,
    keyBytes: h.keyBytes,
    stripes: ks.stripes,
    afHash: h.hashSpec,
  };
}

function activeSlots(h: Luks1Header): number[] {
  return h.keyslots.filter((k) => k.active === LUKS1_KEY_ENABLED).map((k) => k.index);
}

function mkDigest(h: Pick<Luks1Header, 'hashSpec' | 'mkDigestSalt' | 'mkDigestIterations'>, key: Uint8Array): Buffer {
  return pbkdf2Sync(key, h.mkDigestSalt, h.mkDigestIterations, LUKS1_DIGEST_BYTES, h.hashSpec);
}

/** Tries the active keyslots (preferred first) within the per-attempt budget and returns the verified volume key (caller wipes). */
export async function luks1Unlock(
  io: HeaderIo,
  h: Luks1Header,
  secret: Uint8Array,
  opts: UnlockAttempt,
): Promise<{ volumeKey: Uint8Array; keyslot: number }> {
  checkLuks1Supported(h);
  const limits = opts.limits ?? DEFAULT_KDF_LIMITS;
  const hash = h.hashSpec as LuksHash;
  // The MK digest (LUKS1 spec §4.1): PBKDF2 of each candidate key, checked once for the whole header.
  const digestKdf: KdfParams = { type: 'pbkdf2', hash, iterations: h.mkDigestIterations, salt: h.mkDigestSalt };
  checkKdfCost(digestKdf, limits, 'MK digest');
  const ids = keyslotOrder(activeSlots(h), opts.keyslot, LUKS1_KEYSLOTS);
  return tryKeyslots(
    ids,
    (id) => {
      const ks = h.keyslots[id]!;
      const end = BigInt(ks.keyMaterialOffset * SECTOR + luks1AreaBytes(h, ks.stripes));
      if (end > io.size) throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${id}: area ends at ${end}, past the end of the device (${io.size} bytes)`);
      const g = geometry(h, ks);
      checkKdfCost(g.kdf, limits, g.what);
      return keyslotAttempt(io, g, secret, { what: 'MK digest', kdf: digestKdf, digest: h.mkDigest }, limits, opts.signal);
    },
    limits,
    opts.signal,
  );
}

export interface Luks1FormatParams {
  readonly volumeSize: bigint;
  readonly keyBytes: 32 | 64;
  readonly dataOffset?: bigint | undefined;
  readonly kdf: KdfOptions;
  readonly digestIterations?: number | undefined;
}

/** cryptsetup's LUKS1 layout: keyslot areas aligned to 4096 bytes from sector 8; payload aligned to 1 MiB (default 2 MiB). */
function luks1Layout(keyBytes: number, dataOffset: bigint | undefined): { slotSectors: number; payloadSectors: number } {
  const areaSectors = luks1AreaBytes({ keyBytes }, LUKS_STRIPES) / SECTOR;
  const slotSectors = Math.ceil(areaSectors / 8) * 8;
  const needed = 8 + LUKS1_KEYSLOTS * slotSectors;
  if (dataOffset === undefined) return { slotSectors, payloadSectors: Math.ceil(needed / 4096) * 4096 };
  if (dataOffset % 512n !== 0n || dataOffset < BigInt(needed * SECTOR) || dataOffset > 0xffffffffn * 512n) {
    throw new LuksError('LUKS_BAD_ARG', `dataOffset ${dataOffset} must be a multiple of 512 and at least ${needed * SECTOR} for 8 keyslots`);
  }
  return { slotSectors, payloadSectors: Number(dataOffset / 512n) };
}

/** A fresh LUKS1 header region (payloadOffset bytes) with keyslot 0 holding the new volume key. */
export async function luks1Format(
  p: Luks1FormatParams,
  secret: Uint8Array,
): Promise<{ header: Uint8Array; volumeKey: Uint8Array; headerInfo: Luks1Header }> {
  const kdf = kdfParamsFor(p.kdf, randomBytes(32));
  if (kdf.type !== 'pbkdf2') throw new LuksError('LUKS_BAD_ARG', `LUKS1 keyslots use pbkdf2 only, not ${kdf.type}`);
  const { slotSectors, payloadSectors } = luks1Layout(p.keyBytes, p.dataOffset);
  if (p.volumeSize <= BigInt(payloadSectors * SECTOR)) {
    throw new LuksError('LUKS_BAD_ARG', `volume size ${p.volumeSize} leaves no room after the ${payloadSectors * SECTOR}-byte header`);
  }
  const digestIterations = p.digestIterations ?? 1000;
  if (!Number.isSafeInteger(digestIterations) || digestIterations < 1000) throw new LuksError('LUKS_BAD_ARG', 'digestIterations must be >= 1000');
  // Filled in place: new Uint8Array(randomBytes(n)) would leave the key in an unwiped Buffer.
  const volumeKey = randomFillSync(new Uint8Array(p.keyBytes));
  try {
    const keyslots: Luks1Keyslot[] = [];
    for (let i = 0; i < LUKS1_KEYSLOTS; i++) {
      keyslots.push({ index: i, active: LUKS1_KEY_DISABLED, iterations: 0, salt: new Uint8Array(32), keyMaterialOffset: 8 + i * slotSectors, stripes: LUKS_STRIPES });
    }
    const mkDigestSalt = new Uint8Array(randomBytes(32));
    const base = {
      version: 1,
      cipherName: 'aes',
      cipherMode: 'xts-plain64',
      hashSpec: kdf.hash,
      payloadOffset: payloadSectors,
      keyBytes: p.keyBytes,
      mkDigestSalt,
      mkDigestIterations: digestIterations,
      uuid: randomUUID(),
    };
    const digest = mkDigest(base, volumeKey);
    const h0: Luks1Header = { ...base, mkDigest: new Uint8Array(digest), keyslots };
    digest.fill(0);
    const header = new Uint8Array(payloadSectors * SECTOR);
    const io = await openHeaderIo(header, true);
    const headerInfo = await luks1SetKeyslot(io, h0, 0, volumeKey, secret, kdf, DEFAULT_KDF_LIMITS);
    return { header, volumeKey, headerInfo };
  } catch (e) {
    volumeKey.fill(0);
    throw e;
  }
}

/** Seals volumeKey into keyslot `id` (material first, then the phdr), returning the new header. */
export async function luks1SetKeyslot(
  io: HeaderIo,
  h: Luks1Header,
  id: number,
  volumeKey: Uint8Array,
  secret: Uint8Array,
  kdf: KdfParams,
  limits: KdfLimits,
): Promise<Luks1Header> {
  if (kdf.type !== 'pbkdf2' || kdf.hash !== h.hashSpec) {
    throw new LuksError('LUKS_BAD_ARG', `LUKS1 keyslots use pbkdf2 with the header hash ${h.hashSpec}`);
  }
  const old = h.keyslots[id]!;
  const ks: Luks1Keyslot = { ...old, active: LUKS1_KEY_ENABLED, iterations: kdf.iterations, salt: kdf.salt, stripes: LUKS_STRIPES };
  const next: Luks1Header = { ...h, keyslots: h.keyslots.map((k) => (k.index === id ? ks : k)) };
  // Refuse before any write: a foreign inactive slot may point anywhere, and the header must encode.
  checkLuks1Layout(next);
  const end = BigInt(ks.keyMaterialOffset * SECTOR + luks1AreaBytes(h, LUKS_STRIPES));
  if (end > io.size) throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${id}: area ends at ${end}, past the end of the device (${io.size} bytes)`);
  const phdr = encodeLuks1Header(next);
  const material = await sealKeyslot(geometry(h, ks), volumeKey, secret, limits);
  try {
    await io.write(ks.keyMaterialOffset * SECTOR, material);
  } finally {
    material.fill(0);
  }
  await io.write(0, phdr);
  await io.sync();
  return next;
}

/** Disables keyslot `id` and overwrites its key material with random bytes. */
export async function luks1KillKeyslot(io: HeaderIo, h: Luks1Header, id: number): Promise<Luks1Header> {
  const ks = h.keyslots[id]!;
  const next: Luks1Header = {
    ...h,
    keyslots: h.keyslots.map((k) => (k.index === id ? { ...k, active: LUKS1_KEY_DISABLED, iterations: 0, salt: new Uint8Array(32) } : k)),
  };
  await io.write(0, encodeLuks1Header(next));
  await io.write(ks.keyMaterialOffset * SECTOR, randomBytes(luks1AreaBytes(h, LUKS_STRIPES)));
  await io.sync();
  return next;
}

export { activeSlots as luks1ActiveSlots };
