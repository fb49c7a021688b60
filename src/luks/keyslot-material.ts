/** Sealing and opening one keyslot's AF material, shared by LUKS1 and LUKS2. */
import { LuksError } from './errors.js';
import type { HeaderIo } from './header-io.js';
import { afMerge, afSectorBytes, afSplit } from './af-splitter.js';
import { timingSafeEqual } from 'node:crypto';
import { deriveKey, kdfWork, type KdfLimits, type KdfParams, type LuksHash } from './kdf.js';
import { decryptKeyslotArea, encryptKeyslotArea } from './keyslot-cipher.js';

export const LUKS_STRIPES = 4000;
export const XTS_PLAIN64 = 'aes-xts-plain64';

/** Where and how one keyslot stores the volume key. */
export interface KeyslotGeometry {
  /** For messages: "keyslot 3". */
  readonly what: string;
  readonly kdf: KdfParams;
  /** Key size of the area cipher (aes-xts-plain64). */
  readonly areaKeyBytes: number;
  readonly areaOffset: number;
  readonly keyBytes: number;
  readonly stripes: number;
  readonly afHash: LuksHash;
}

/** Throws LUKS_UNSUPPORTED_CIPHER unless the spec is aes-xts-plain64 with a 256- or 512-bit key. */
export function checkCipher(spec: string, keyBytes: number, where: string): void {
  if (spec !== XTS_PLAIN64) {
    throw new LuksError('LUKS_UNSUPPORTED_CIPHER', `${where}: cipher ${JSON.stringify(spec)} unsupported; only ${XTS_PLAIN64} is`);
  }
  if (keyBytes !== 32 && keyBytes !== 64) {
    throw new LuksError('LUKS_UNSUPPORTED_CIPHER', `${where}: ${XTS_PLAIN64} with a ${keyBytes * 8}-bit key unsupported; 256 or 512 bits are`);
  }
}

/** Reads, decrypts and merges a keyslot's material into a candidate volume key (caller wipes). */
export async function openKeyslot(io: HeaderIo, g: KeyslotGeometry, secret: Uint8Array, limits: KdfLimits, signal?: AbortSignal): Promise<Uint8Array> {
  if (g.stripes !== LUKS_STRIPES) throw new LuksError('LUKS_BAD_HEADER', `${g.what}: AF stripes ${g.stripes}, expected ${LUKS_STRIPES}`);
  const material = await io.read(g.areaOffset, afSectorBytes(g.keyBytes, g.stripes), `${g.what} key material`);
  let areaKey: Uint8Array;
  try {
    areaKey = await deriveKey(g.kdf, secret, g.areaKeyBytes, limits, g.what, signal);
  } catch (e) {
    material.fill(0);
    throw e;
  }
  try {
    decryptKeyslotArea(areaKey, material);
    return afMerge(material, g.keyBytes, g.stripes, g.afHash);
  } finally {
    areaKey.fill(0);
    material.fill(0);
  }
}

/** AF-splits and encrypts the volume key into sector-padded area bytes, ready to write at g.areaOffset. */
export async function sealKeyslot(g: KeyslotGeometry, volumeKey: Uint8Array, secret: Uint8Array, limits: KdfLimits): Promise<Uint8Array> {
  const split = afSplit(volumeKey, g.stripes, g.afHash);
  const material = new Uint8Array(afSectorBytes(g.keyBytes, g.stripes));
  material.set(split);
  split.fill(0);
  let areaKey: Uint8Array | null = null;
  try {
    areaKey = await deriveKey(g.kdf, secret, g.areaKeyBytes, limits, g.what);
    encryptKeyslotArea(areaKey, material);
    return material;
  } catch (e) {
    material.fill(0); // unencrypted AF material recovers the volume key
    throw e;
  } finally {
    areaKey?.fill(0);
  }
}

/** The digest that tells the volume key (LUKS1 spec 4.1 "MK digest", LUKS2 "digests"): PBKDF2 of the key. */
export interface VolumeKeyDigest {
  /** For messages: "MK digest", "digest 0". */
  readonly what: string;
  readonly kdf: KdfParams;
  readonly digest: Uint8Array;
}

/**
 * One keyslot as an unlock attempt: its KDF work (the keyslot's KDF and the digest check) and the run that opens
 * it and checks the candidate against the digest. A candidate that does not match never leaves (it is wiped).
 */
export function keyslotAttempt(
  io: HeaderIo,
  g: KeyslotGeometry,
  secret: Uint8Array,
  digest: VolumeKeyDigest,
  limits: KdfLimits,
  signal: AbortSignal | undefined,
): { readonly work: number; readonly run: () => Promise<Uint8Array | null> } {
  return {
    work: kdfWork(g.kdf, g.areaKeyBytes) + kdfWork(digest.kdf, digest.digest.length),
    run: async () => {
      const candidate = await openKeyslot(io, g, secret, limits, signal);
      let ok = false;
      try {
        const d = await deriveKey(digest.kdf, candidate, digest.digest.length, limits, digest.what, signal);
        ok = timingSafeEqual(d, digest.digest);
        d.fill(0);
      } finally {
        if (!ok) candidate.fill(0);
      }
      return ok ? candidate : null;
    },
  };
}
