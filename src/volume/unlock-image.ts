/**
 * The one unlock of an encrypted volume: its volume key and payload layout, from
 * the caller's passphrase or key file, else from the vault: a LUKS2
 * vhdcrypt-vault token names the secret, a LUKS1 volume is found by its UUID,
 * a plain volume by its secret id (or its VHD's UUID), its sector size read
 * from the secret's tags (a plain volume has no header to hold it). A LUKS2
 * header with a systemd-pkcs11 token (systemd-cryptenroll's, or ours) opens
 * through the PKCS#11 token when it has no vhdcrypt-vault token and no vault
 * was named, or when the caller asks for it (usePkcs11Token). Images
 * (unlockImage) and streams (unlockVolume over the buffered header area) both
 * come through here.
 */
import { unlock, type LuksSecret, type LuksToken, type LuksVolumeInfo } from '../luks/index.js';
import type { DiskImage } from '../image/index.js';
import { VolumeError } from './errors.js';
import { readVolumeLuksInfo } from './luks-region.js';
import { hasUserSecret, plainKeyFromFile, userSecret, wipeSecret, type KeySourceOptions } from './key-source.js';
import { checkKeySize, checkSectorSize } from './options.js';
import { luksLayout, plainLayout, type PayloadLayout } from './payload-layout.js';
import { defaultVaultExists, openVolumeVault, withVaultSecret, type VolumeVault } from './vault-link.js';
import { imageSource, type VolumeSource } from './volume-source.js';
import { pkcs11TokenPassphrase, systemdPkcs11TokensOf } from './pkcs11-token.js';
import { Pkcs11Error, type Pkcs11WrapOptions } from '../pkcs11/index.js';

export interface UnlockImageOptions extends KeySourceOptions {
  /** Vault URI (default: the token's vault, else the embedded vault). */
  readonly vault?: string;
  readonly vaultCredentials?: unknown;
  /** The vault secret to use (plain volumes; overrides the token/UUID lookup). */
  readonly secretId?: string;
  /**
   * Plain volumes: crypto sector size (default: the vault secret's SectorSize tag, else 512) and key size (default:
   * the vault secret's length; a key file gives 512 bits unless told).
   */
  readonly plain?: { readonly sectorSize?: 512 | 4096; readonly keyBits?: 256 | 512 };
  /** Stops the unlock within a second, even inside a keyslot's KDF (LUKS_ABORTED). */
  readonly signal?: AbortSignal;
  /** Open through the header's systemd-pkcs11 token even when a vhdcrypt-vault token is there too. */
  readonly usePkcs11Token?: boolean;
}

/** The PKCS#11 module and PIN carried in the vault credentials (a token KEK, master key or LUKS token uses them). */
export function pkcs11Of(credentials: unknown): Pkcs11WrapOptions | undefined {
  return (credentials as { pkcs11?: Pkcs11WrapOptions } | undefined)?.pkcs11;
}

export interface UnlockedImage {
  /** The volume key, allocated for this caller: the caller wipes it (.fill(0)) when done. */
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

/** The vhdcrypt-vault token of a LUKS2 header (it names the vault secret that opens a keyslot), or null. */
export function vaultTokenOf(info: LuksVolumeInfo): { readonly secretId: string; readonly vault: string | null; readonly keyslot: number | null; readonly token: LuksToken } | null {
  const token = info.tokens.find((t) => t.type === VAULT_TOKEN && typeof t.json.secret === 'string');
  if (!token) return null;
  const vault = typeof token.json.vault === 'string' && token.json.vault !== '' ? token.json.vault : null;
  return { secretId: String(token.json.secret), vault, keyslot: token.keyslots[0] ?? null, token };
}

/** Open a LUKS or plain image's payload key. */
export async function unlockImage(image: DiskImage, opts: UnlockImageOptions = {}): Promise<UnlockedImage> {
  return unlockVolume(imageSource(image), opts);
}

/** Open a LUKS or plain volume's payload key, from an image or from the header bytes of a stream. */
export async function unlockVolume(src: VolumeSource, opts: UnlockImageOptions = {}): Promise<UnlockedImage> {
  const { secret, ...unlocked } = await unlockVolumeWithSecret(src, opts);
  wipeSecret(secret);
  return unlocked;
}

/**
 * The payload layout a LUKS header gives, read without any key (the same layout unlockImage returns for it); null
 * for a disk with no LUKS header (a plain volume's layout is in its vault secret's tags).
 */
export async function readLuksLayout(image: DiskImage): Promise<PayloadLayout | null> {
  const src = imageSource(image);
  const info = await readVolumeLuksInfo(src);
  return info && volumeLuksLayout(src, info);
}

function volumeLuksLayout(src: VolumeSource, info: LuksVolumeInfo): PayloadLayout {
  return luksLayout(info, src.size ?? info.dataOffset + BigInt(info.sectorSize));
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
  return unlockVolumeWithSecret(imageSource(image), opts);
}

async function unlockVolumeWithSecret(src: VolumeSource, opts: UnlockImageOptions): Promise<UnlockedImageWithSecret> {
  checkUnlockOptions(opts);
  // Straight from the image: the headers, the JSON area and the one keyslot's material, not the whole region.
  const info = await readVolumeLuksInfo(src);
  if (!info) return { ...(await unlockPlain(src, opts)), secret: null };
  const layout = volumeLuksLayout(src, info);
  const found = await keyslotSecret(src.name, { info }, opts);
  try {
    const r = await unlock(src.header, found.secret, { ...(found.keyslot !== null ? { keyslot: found.keyslot } : {}), signal: opts.signal });
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
  const token = vaultTokenOf(info);
  const systemd = systemdPkcs11TokensOf(info);
  // A vault named by the caller (--vault, --secret) is the caller's choice; else a header with no vault token opens
  // through its systemd-pkcs11 token.
  const vaultAsked = opts.vault !== undefined || opts.secretId !== undefined;
  if (systemd.length > 0 && (opts.usePkcs11Token === true || (token === null && !vaultAsked))) {
    return { ...(await systemdTokenSecret(systemd, opts)), secretId: null, vaultUri: null };
  }
  if (opts.usePkcs11Token === true) throw new VolumeError('ENGINE_NO_KEY_SOURCE', `${name}: no systemd-pkcs11 token in this header`);
  const vault = await openVolumeVault(opts.vault ?? token?.vault ?? undefined, opts.vaultCredentials);
  return withVaultSecret(vault, async (hold) => {
    const secretId = opts.secretId ?? (token ? token.secretId : await vault.findByVolumeUuid(info.uuid));
    if (!secretId) {
      throw new VolumeError('ENGINE_NO_KEY_SOURCE', `${name}: no vault secret records LUKS UUID ${info.uuid}; give --passphrase-file or --key-file`);
    }
    const material = hold(await vault.unseal(secretId));
    return { secret: { passphrase: material }, secretId, vaultUri: vault.uri, keyslot: token?.keyslot ?? null };
  });
}

/** The passphrase of the first systemd-pkcs11 token whose token and key are present (others are tried in turn). */
async function systemdTokenSecret(tokens: ReturnType<typeof systemdPkcs11TokensOf>, opts: UnlockImageOptions): Promise<{ secret: LuksSecret; keyslot: number | null }> {
  let last: unknown;
  for (const t of tokens) {
    try {
      return { secret: { passphrase: await pkcs11TokenPassphrase(t, pkcs11Of(opts.vaultCredentials)?.access) }, keyslot: t.keyslot };
    } catch (e) {
      // Another smartcard may hold the next token's key; any other refusal (PIN, module) is the answer.
      if (!(e instanceof Pkcs11Error) || (e.code !== 'PKCS11_TOKEN_NOT_FOUND' && e.code !== 'PKCS11_KEY_NOT_FOUND')) throw e;
      last = e;
    }
  }
  throw last;
}

function checkUnlockOptions(opts: UnlockImageOptions): void {
  if (opts.plain?.sectorSize !== undefined) checkSectorSize(opts.plain.sectorSize, 'plain sector size');
  if (opts.plain?.keyBits !== undefined) checkKeySize(opts.plain.keyBits, 'plain key size');
}

async function unlockPlain(src: VolumeSource, opts: UnlockImageOptions): Promise<UnlockedImage> {
  const layoutOf = (sectorSize: number) => plainLayout(src.size ?? BigInt(sectorSize), sectorSize);
  if (opts.keyFile !== undefined) {
    const keyBytes = (opts.plain?.keyBits ?? 512) / 8;
    const volumeKey = await plainKeyFromFile(opts.keyFile, keyBytes);
    return { volumeKey, layout: layoutOf(opts.plain?.sectorSize ?? 512), info: null, keyslot: null, secretId: null, vaultUri: null };
  }
  if (hasUserSecret(opts)) {
    throw new VolumeError('ENGINE_NOT_ENCRYPTED', `${src.name}: no LUKS header; a plain volume opens with a key file or its vault secret, not a passphrase`);
  }
  const vault = await openVolumeVault(opts.vault, opts.vaultCredentials);
  return withVaultSecret(vault, async (hold) => {
    const secretId = await plainSecretIn(vault, src.uuid, opts);
    if (!secretId) {
      throw new VolumeError('ENGINE_NOT_ENCRYPTED', `${src.name}: no LUKS header and no vault secret for it; is it encrypted? (a plain volume needs its secret id or key file)`);
    }
    const material = hold(await vault.unseal(secretId));
    if (material.length !== 32 && material.length !== 64) {
      throw new VolumeError('ENGINE_NO_KEY_SOURCE', `vault secret ${secretId} does not hold a plain volume key`);
    }
    // Plain volumes keep their parameters in the secret's tags (there is no header).
    const tags = await vault.tags(secretId);
    const size = opts.plain?.sectorSize ?? (Number(tags.SectorSize) === 4096 ? 4096 : 512);
    return { volumeKey: material, layout: layoutOf(size), info: null, keyslot: null, secretId, vaultUri: vault.uri };
  });
}

/** A headerless volume's vault secret: the one given, else the one recording its VHD UUID (a raw file has none). */
async function plainSecretIn(vault: VolumeVault, uuid: string | null, opts: { readonly secretId?: string }): Promise<string | null> {
  return opts.secretId ?? (uuid ? await vault.findByVolumeUuid(uuid) : null);
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
  const vault = await openVolumeVault(opts.vault, opts.vaultCredentials);
  try {
    return await plainSecretIn(vault, image.uuid, opts);
  } finally {
    await vault.close();
  }
}
