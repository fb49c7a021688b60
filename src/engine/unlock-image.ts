/**
 * unlockImage: the volume key and payload layout of an encrypted image, from
 * the caller's passphrase or key file, else from the vault: a LUKS2
 * vhdcrypt-vault token names the secret, a LUKS1 volume is found by its UUID,
 * a plain volume by its secret id (or its VHD's UUID).
 */
import { unlock, type LuksSecret, type LuksVolumeInfo } from '../luks/index.js';
import type { DiskImage } from '../image/index.js';
import { EngineError } from './errors.js';
import { readLuksInfo } from './luks-region.js';
import { hasUserSecret, plainKeyFromFile, userSecret, wipeSecret, type KeySourceOptions } from './key-source.js';
import { luksLayout, plainLayout, type PayloadLayout } from './crypto-layout.js';
import { defaultVaultExists, openEngineVault, type EngineVault } from './vault-link.js';

export interface UnlockImageOptions extends KeySourceOptions {
  /** Vault URI (default: the token's vault, else the embedded vault). */
  readonly vault?: string;
  readonly vaultCredentials?: unknown;
  /** The vault secret to use (plain volumes; overrides the token/UUID lookup). */
  readonly secretId?: string;
  /** Plain volumes: crypto sector size (default 512) and key size (default: from the key material, else 512). */
  readonly plain?: { readonly sectorSize?: 512 | 4096; readonly keyBits?: 256 | 512 };
  /** Stops the unlock within a second, even inside a keyslot's KDF (LUKS_ABORTED). */
  readonly signal?: AbortSignal;
}

export interface UnlockedImage {
  /** The volume key; the caller wipes it (.fill(0)) when done. */
  readonly volumeKey: Uint8Array;
  readonly layout: PayloadLayout;
  /** LUKS volumes: the parsed header facts. */
  readonly info: LuksVolumeInfo | null;
  /** The keyslot that opened (LUKS). */
  readonly keyslot: number | null;
  /** The vault secret that opened it, if one did. */
  readonly secretId: string | null;
  readonly vaultUri: string | null;
}

const VAULT_TOKEN = 'vhdcrypt-vault';

/** Open a LUKS or plain image's payload key. */
export async function unlockImage(image: DiskImage, opts: UnlockImageOptions = {}): Promise<UnlockedImage> {
  const { secret, ...unlocked } = await unlockImageWithSecret(image, opts);
  wipeSecret(secret);
  return unlocked;
}

export interface UnlockedImageWithSecret extends UnlockedImage {
  /** LUKS volumes: the secret that opened the keyslot (wipe with wipeSecret); null for plain volumes. */
  readonly secret: LuksSecret | null;
}

/**
 * unlockImage, also handing back the keyslot secret that opened the volume (for `key export`): the same lookup and
 * the same keyslot check, so an exported passphrase is one the image was just opened with. Caller wipes both.
 */
export async function unlockImageWithSecret(image: DiskImage, opts: UnlockImageOptions = {}): Promise<UnlockedImageWithSecret> {
  // Straight from the image: the headers, the JSON area and the one keyslot's material, not the whole region.
  const info = await readLuksInfo(image);
  if (!info) return { ...(await unlockPlain(image, opts)), secret: null };
  const layout = luksLayout(info, image.virtualSize);
  const found = await keyslotSecret(image.path, { info }, opts);
  try {
    const r = await unlock(image, found.secret, { ...(found.keyslot !== null ? { keyslot: found.keyslot } : {}), signal: opts.signal });
    return { volumeKey: r.volumeKey, layout, info, keyslot: r.keyslot, secretId: found.secretId, vaultUri: found.vaultUri, secret: found.secret };
  } catch (e) {
    wipeSecret(found.secret);
    throw e;
  }
}

export interface KeyslotSecret {
  /** Wipe with wipeSecret when done. */
  readonly secret: LuksSecret;
  readonly secretId: string | null;
  readonly vaultUri: string | null;
  /** The keyslot to try first (the token's). */
  readonly keyslot: number | null;
}

/** The secret that opens a keyslot of this header: the caller's, else the vault's (token, then LUKS UUID). */
export async function keyslotSecret(name: string, region: { readonly info: LuksVolumeInfo }, opts: UnlockImageOptions): Promise<KeyslotSecret> {
  const own = await userSecret(opts);
  if (own) return { secret: own, secretId: null, vaultUri: null, keyslot: null };
  const { info } = region;
  const token = info.tokens.find((t) => t.type === VAULT_TOKEN && typeof t.json.secret === 'string');
  const tokenVault = token && typeof token.json.vault === 'string' && token.json.vault !== '' ? token.json.vault : undefined;
  const vault = await openEngineVault(opts.vault ?? tokenVault, opts.vaultCredentials);
  try {
    const secretId = opts.secretId ?? (token ? String(token.json.secret) : await vault.findByVolumeUuid(info.uuid));
    if (!secretId) {
      throw new EngineError('ENGINE_NO_KEY_SOURCE', `${name}: no vault secret records LUKS UUID ${info.uuid}; give --passphrase-file or --key-file`);
    }
    const material = await vault.unseal(secretId);
    return { secret: { passphrase: material }, secretId, vaultUri: vault.uri, keyslot: token?.keyslots[0] ?? null };
  } finally {
    await vault.close();
  }
}

async function unlockPlain(image: DiskImage, opts: UnlockImageOptions): Promise<UnlockedImage> {
  const sectorSize = opts.plain?.sectorSize ?? 512;
  if (opts.keyFile !== undefined) {
    const keyBytes = (opts.plain?.keyBits ?? 512) / 8;
    const volumeKey = await plainKeyFromFile(opts.keyFile, keyBytes);
    return { volumeKey, layout: plainLayout(image.virtualSize, sectorSize), info: null, keyslot: null, secretId: null, vaultUri: null };
  }
  if (hasUserSecret(opts)) {
    throw new EngineError('ENGINE_NOT_ENCRYPTED', `${image.path}: no LUKS header; a plain volume opens with a key file or its vault secret, not a passphrase`);
  }
  const vault = await openEngineVault(opts.vault, opts.vaultCredentials);
  try {
    const secretId = await plainSecretIn(vault, image, opts);
    if (!secretId) {
      throw new EngineError('ENGINE_NOT_ENCRYPTED', `${image.path}: no LUKS header and no vault secret for it; is it encrypted? (a plain volume needs its secret id or key file)`);
    }
    const material = await vault.unseal(secretId);
    if (material.length !== 32 && material.length !== 64) {
      material.fill(0);
      throw new EngineError('ENGINE_NO_KEY_SOURCE', `vault secret ${secretId} does not hold a plain volume key`);
    }
    // Plain volumes keep their parameters in the secret's tags (there is no header).
    const tags = await vault.tags(secretId);
    const tagged = Number(tags.SectorSize);
    const size = opts.plain?.sectorSize ?? (tagged === 4096 ? 4096 : 512);
    return { volumeKey: material, layout: plainLayout(image.virtualSize, size), info: null, keyslot: null, secretId, vaultUri: vault.uri };
  } finally {
    await vault.close();
  }
}

/** A headerless image's vault secret: the one given, else the one recording its VHD UUID (a raw file has none). */
async function plainSecretIn(vault: EngineVault, image: DiskImage, opts: { readonly secretId?: string }): Promise<string | null> {
  return opts.secretId ?? (image.uuid ? await vault.findByVolumeUuid(image.uuid) : null);
}

/**
 * The vault secret that names an image without a LUKS header (so it is a
 * plain dm-crypt volume), found as unlockImage finds it; null when none does.
 * A raw file has no UUID, so only a secret id can name it. No default vault
 * directory at all means no secret names the image; any other vault failure
 * (a damaged vault, one the caller named that cannot be opened) is an error.
 */
export async function findPlainVolumeSecret(image: DiskImage, opts: Pick<UnlockImageOptions, 'vault' | 'vaultCredentials' | 'secretId'> = {}): Promise<string | null> {
  if (opts.secretId !== undefined) return opts.secretId;
  if (!image.uuid) return null;
  if (opts.vault === undefined && !defaultVaultExists()) return null;
  const vault = await openEngineVault(opts.vault, opts.vaultCredentials);
  try {
    return await plainSecretIn(vault, image, opts);
  } finally {
    await vault.close();
  }
}
