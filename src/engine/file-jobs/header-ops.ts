/**
 * Keyslot and header operations on an encrypted image, whatever its container:
 * the header region is read from the virtual disk, changed in memory by the
 * LUKS library, and written back.
 */
import { readFile, stat } from 'node:fs/promises';
import { openImage, parentSearch, SparseVhdImage, type DiskImage, type ParentSearchOptions, type WritableImage } from '../../image/index.js';
import { addKeyslot, addToken, dump, LUKS_MAX_HEADER_REGION, readVolumeInfo, removeKeyslot, type KdfOptions, type LuksDump, type LuksVolumeInfo } from '../../luks/index.js';
import { VhdcryptError } from '../../errors.js';
import { EngineError } from '../errors.js';
import {
  KDF_SYSTEMD_PKCS11,
  keyslotSecret,
  openVolumeVault,
  preparePkcs11Keyslot,
  readLuksRegion,
  typedKdf,
  userSecret,
  vaultTokenOf,
  wipeSecret,
  writeLuksRegion,
  type KeySourceOptions,
  type LuksRegion,
  type Pkcs11Enrollment,
  type UnlockImageOptions,
} from '../../volume/index.js';
import { exists } from './safe-output.js';
import { publishNewFile } from '../../new-file.js';

async function requireLuks(image: DiskImage): Promise<LuksRegion> {
  const region = await readLuksRegion(image);
  if (!region) throw new EngineError('ENGINE_NOT_ENCRYPTED', `${image.path}: no LUKS header on its virtual disk`);
  return region;
}

async function withImage<T>(path: string, writable: false, search: ParentSearchOptions, fn: (img: DiskImage) => Promise<T>): Promise<T>;
async function withImage<T>(path: string, writable: true, search: ParentSearchOptions, fn: (img: WritableImage) => Promise<T>): Promise<T>;
async function withImage<T>(path: string, writable: boolean, search: ParentSearchOptions, fn: (img: WritableImage) => Promise<T>): Promise<T> {
  // Read-only opens go through the same callback type; they never write.
  const img = (writable ? await openImage(path, { writable: true, ...parentSearch(search) }) : await openImage(path, parentSearch(search))) as WritableImage;
  try {
    return await fn(img);
  } finally {
    await img.close();
  }
}

/** Keyslots and tokens of an encrypted image. */
export async function listImageKeyslots(path: string, opts: ParentSearchOptions = {}): Promise<Pick<LuksVolumeInfo, 'version' | 'uuid' | 'keyslots' | 'tokens'>> {
  return withImage(path, false, opts, async (img) => {
    const { info } = await requireLuks(img);
    return { version: info.version, uuid: info.uuid, keyslots: info.keyslots, tokens: info.tokens };
  });
}

/** Add a keyslot for `added`, opening the volume with the existing secret (caller's or the vault's); returns its id. */
export async function addImageKeyslot(
  path: string,
  existing: UnlockImageOptions,
  added: KeySourceOptions,
  opts: { kdf?: KdfOptions; keyslot?: number } & ParentSearchOptions = {},
): Promise<number> {
  return withImage(path, true, opts, async (img) => {
    const region = await requireLuks(img);
    const newSecret = await userSecret(added);
    if (!newSecret) throw new EngineError('ENGINE_BAD_ARGUMENT', 'the new keyslot needs a passphrase file or key file');
    const old = await keyslotSecret(path, region, existing);
    try {
      const kdf = typedKdf(region.info.version === 1 ? 'luks1' : 'luks2', opts.kdf);
      const id = await addKeyslot(region.bytes, old.secret, newSecret, { kdf, ...(opts.keyslot !== undefined ? { newKeyslot: opts.keyslot } : {}), ...(old.keyslot !== null ? { keyslot: old.keyslot } : {}) });
      await writeLuksRegion(img, region.bytes);
      return id;
    } finally {
      wipeSecret(old.secret);
      wipeSecret(newSecret);
    }
  });
}

/**
 * Add a keyslot and a systemd-pkcs11 token (as systemd-cryptenroll --pkcs11-token-uri writes them), opening
 * the volume with the existing secret; returns the keyslot and token ids.
 */
export async function addImagePkcs11Keyslot(
  path: string,
  existing: UnlockImageOptions,
  enrollment: Pkcs11Enrollment,
  opts: { keyslot?: number } & ParentSearchOptions = {},
): Promise<{ keyslot: number; token: number }> {
  return withImage(path, true, opts, async (img) => {
    const region = await requireLuks(img);
    if (region.info.version !== 2) throw new EngineError('ENGINE_BAD_ARGUMENT', `${path}: a systemd-pkcs11 token needs LUKS2 (LUKS1 has no tokens)`);
    // The public key first: a token or certificate that cannot be used leaves the image untouched.
    const p = await preparePkcs11Keyslot(enrollment);
    let old: Awaited<ReturnType<typeof keyslotSecret>> | null = null;
    try {
      old = await keyslotSecret(path, region, existing);
      const keyslot = await addKeyslot(region.bytes, old.secret, { passphrase: p.passphrase }, {
        kdf: KDF_SYSTEMD_PKCS11, ...(opts.keyslot !== undefined ? { newKeyslot: opts.keyslot } : {}), ...(old.keyslot !== null ? { keyslot: old.keyslot } : {}),
      });
      const token = await addToken(region.bytes, p.token(keyslot));
      await writeLuksRegion(img, region.bytes);
      return { keyslot, token };
    } finally {
      p.passphrase.fill(0);
      if (old) wipeSecret(old.secret);
    }
  });
}

/** Remove a keyslot (its key material is destroyed); the last one only with force. */
export async function removeImageKeyslot(path: string, keyslot: number, opts: { force?: boolean } & ParentSearchOptions = {}): Promise<void> {
  await withImage(path, true, opts, async (img) => {
    const region = await requireLuks(img);
    await removeKeyslot(region.bytes, keyslot, { force: opts.force === true });
    await writeLuksRegion(img, region.bytes);
  });
}

/** Copy the header region [0, data offset) of the image's virtual disk into a new file (mode 0600). */
export async function backupImageHeader(path: string, file: string, opts: ParentSearchOptions = {}): Promise<{ bytes: number }> {
  if (await exists(file)) throw new EngineError('ENGINE_DEST_EXISTS', `${file} already exists; not overwriting`);
  const region = await withImage(path, false, opts, requireLuks);
  if ((await publishNewFile(file, region.bytes)) === 'exists') throw new EngineError('ENGINE_DEST_EXISTS', `${file} appeared meanwhile; not overwriting`);
  return { bytes: region.bytes.length };
}

/**
 * Write a header backup over the image's header region. The backup must be a
 * valid LUKS header; replacing a readable header of another volume (UUID or
 * data offset differ) needs force.
 */
export async function restoreImageHeader(path: string, file: string, opts: { force?: boolean } & ParentSearchOptions = {}): Promise<{ bytes: number }> {
  const st = await stat(file);
  if (BigInt(st.size) > LUKS_MAX_HEADER_REGION) throw new EngineError('ENGINE_HEADER_TOO_LARGE', `${file}: ${st.size} bytes is larger than any LUKS header region`);
  const backup = new Uint8Array(await readFile(file));
  const info = await readVolumeInfo(backup);
  if (BigInt(backup.length) < info.dataOffset) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `${file}: holds ${backup.length} bytes but its header region is ${info.dataOffset}`);
  }
  return withImage(path, true, opts, async (img) => {
    if (info.dataOffset > img.virtualSize) throw new EngineError('ENGINE_BAD_ARGUMENT', `${path}: the backup's data offset ${info.dataOffset} is past the disk's end`);
    let current: LuksRegion | null = null;
    try {
      current = await readLuksRegion(img);
    } catch (e) {
      // A damaged header (a typed parse error) is what restore is for: it is replaced below. I/O errors stop here.
      if (!(e instanceof VhdcryptError)) throw e;
    }
    if (current && !opts.force && (current.info.uuid !== info.uuid || current.info.dataOffset !== info.dataOffset)) {
      throw new EngineError('ENGINE_BAD_ARGUMENT', `${path}: its header (UUID ${current.info.uuid}) is not the backup's (UUID ${info.uuid}); use --force to replace it`);
    }
    const region = backup.subarray(0, Number(info.dataOffset));
    await writeLuksRegion(img, region);
    return { bytes: region.length };
  });
}

export interface ImageDescription {
  readonly path: string;
  readonly container: string;
  readonly virtualSize: bigint;
  readonly fileSize: bigint;
  readonly allocatedBytes: bigint;
  readonly blockSize: number | null;
  readonly uuid: string | null;
  /** 'plain' when a vault secret records the VHD's UUID; 'none-or-plain' when nothing says. */
  readonly encryption: 'luks1' | 'luks2' | 'plain' | 'none-or-plain';
  readonly luks: (LuksDump & { readonly dataOffset: string; readonly sectorSize: number }) | null;
  /** Which vault secret opens it (token, or lookup by LUKS UUID); null when none is known. */
  readonly secret: { readonly id: string; readonly via: 'token' | 'volume-uuid'; readonly vault: string | null } | null;
  readonly notes: readonly string[];
  /** The image and, for a differencing VHD, each parent down to the base: link by link, top first. */
  readonly chain: readonly ChainLinkDescription[];
}

export interface ChainLinkDescription {
  readonly path: string;
  readonly container: string;
  readonly uuid: string | null;
  /** Blocks this link's own file holds (dynamic and differencing), else null. */
  readonly allocatedBlocks: number | null;
  /** Differencing links: the parent they name (UUID, time stamp, name), else null. */
  readonly parent: { readonly uuid: string; readonly timestamp: number; readonly name: string } | null;
}

/** The links of an opened image, top first (each differencing link's opened parent, down to the base). */
export function chainLinks(img: DiskImage): ChainLinkDescription[] {
  const out: ChainLinkDescription[] = [];
  for (let l: DiskImage | undefined = img; l; l = l.parent) {
    let blocks: number | null = null;
    if (l instanceof SparseVhdImage) {
      blocks = 0;
      for (let b = 0; b < l.blockCount; b++) if (l.ownBlockSector(b) !== null) blocks++;
    }
    const h = l.dynamicHeader;
    out.push({
      path: l.path,
      container: l.format,
      uuid: l.uuid ?? null,
      allocatedBlocks: blocks,
      parent: l.format === 'vhd-differencing' && h ? { uuid: h.parentUniqueId, timestamp: h.parentTimestamp, name: h.parentUnicodeName } : null,
    });
  }
  return out;
}

/** Container, size, allocation, LUKS summary, keyslots, tokens and the secret that unlocks it. */
export async function describeImage(path: string, opts: { vault?: string; vaultCredentials?: unknown } & ParentSearchOptions = {}): Promise<ImageDescription> {
  const fileSize = BigInt((await stat(path)).size);
  return withImage(path, false, opts, async (img) => {
    let allocated = 0n;
    for await (const e of img.extents()) if (e.allocated) allocated += e.length;
    const notes: string[] = [...img.warnings];
    const region = await readLuksRegion(img);
    let luks: ImageDescription['luks'] = null;
    let secret: ImageDescription['secret'] = null;
    if (region) {
      luks = { ...(await dump(region.bytes)), dataOffset: String(region.info.dataOffset), sectorSize: region.info.sectorSize };
      const token = vaultTokenOf(region.info);
      if (token) {
        secret = { id: token.secretId, via: 'token', vault: typeof token.token.json.vault === 'string' ? token.token.json.vault : null };
      } else {
        try {
          const vault = await openVolumeVault(opts.vault, opts.vaultCredentials);
          try {
            const id = await vault.findByVolumeUuid(region.info.uuid);
            if (id) secret = { id, via: 'volume-uuid', vault: vault.uri };
          } finally {
            await vault.close();
          }
        } catch (e) {
          notes.push(`vault lookup by LUKS UUID failed: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
    if (!region && img.uuid) {
      // A plain volume has no header; its secret, if any, records the VHD's UUID.
      try {
        const vault = await openVolumeVault(opts.vault, opts.vaultCredentials);
        try {
          const id = await vault.findByVolumeUuid(img.uuid);
          if (id) secret = { id, via: 'volume-uuid', vault: vault.uri };
        } finally {
          await vault.close();
        }
      } catch (e) {
        notes.push(`vault lookup by VHD UUID failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return {
      path,
      container: img.format,
      virtualSize: img.virtualSize,
      fileSize,
      allocatedBytes: allocated,
      blockSize: img.blockSize ?? null,
      uuid: img.uuid ?? null,
      encryption: region ? (region.info.version === 1 ? 'luks1' : 'luks2') : secret ? 'plain' : 'none-or-plain',
      luks,
      secret,
      notes,
      chain: chainLinks(img),
    };
  });
}
