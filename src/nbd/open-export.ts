/**
 * Open what `vhdcrypt serve` exports: an image holding a LUKS volume, or a
 * plain dm-crypt volume (a key given, or a vault secret naming it, found as
 * decrypt finds it), is served decrypted. An image is served as it is only
 * when the caller says it is plaintext and nothing says otherwise: no LUKS
 * header and no vault secret naming it. Without that word, an image with
 * neither is refused: its bytes may be a plain volume's ciphertext, and
 * serving them as plaintext would also let writes land unencrypted in it.
 */
import { createXts, type BackendChoice } from '../crypto/index.js';
import { openImage, parentSearch, type DiskImage, type ParentSearchOptions } from '../image/index.js';
import { BitlockerError, decryptedDisk, diskBytes, openDiskVolumes, readDiskLayout, resolveProtector, type Protector } from '../bitlocker/index.js';
import { VolumeError, findPlainVolumeSecret, readLuksInfo, unlockImage } from '../volume/index.js';
import type { NbdBacking } from './backing.js';
import { DirectReadFile } from './direct-replies.js';
import { EncryptedBacking } from './encrypted-backing.js';
import { ImageBacking } from './image-backing.js';

/** parentDirs / allowAbsoluteParents: where a differencing image's parents may be (openImage). */
export interface OpenExportOptions extends ParentSearchOptions {
  readonly readOnly?: boolean;
  /** A file whose first line is the LUKS passphrase. */
  readonly passphraseFile?: string;
  /** A LUKS key file (whole content), or a plain volume's raw key. */
  readonly keyFile?: string;
  /** Vault URI to unseal the key from (default: the LUKS2 token's vault, else the embedded vault). */
  readonly vault?: string;
  /** Treat an image without a LUKS header as a plain dm-crypt volume (needs --key-file or a vault secret). */
  readonly plain?: boolean;
  /** A plain volume's vault secret (a raw file has no VHD UUID for the vault to find it by). */
  readonly secretId?: string;
  /**
   * Export the image as it is (plaintext). Required for that: an image with no LUKS header served without
   * this or a key is refused (ENGINE_PLAINTEXT_NOT_CONFIRMED); with it, an image that has a LUKS header or
   * that a vault secret names is refused (ENGINE_PLAINTEXT_REFUSED). Conflicts with every key option.
   */
  readonly plaintext?: boolean;
  readonly plainSectorSize?: 512 | 4096;
  readonly backend?: BackendChoice;
  /**
   * Raw, fixed and dynamic VHD containers with the native backend on Linux: each plaintext (not TLS) connection
   * gets a native reply thread (the default); false answers every read on the main thread.
   */
  readonly replyThreads?: boolean;
  /** Vault credentials; `{ pkcs11 }` carries the PKCS#11 module and PIN (a token KEK, a systemd-pkcs11 token). */
  readonly vaultCredentials?: unknown;
  /** Open through the header's systemd-pkcs11 token even when a vhdcrypt-vault token is there too. */
  readonly usePkcs11Token?: boolean;
  /** BitLocker disks: the key (--passphrase-file is the BitLocker password and --secret the BEK secret otherwise). */
  readonly bitlockerProtector?: Protector;
}

async function hasBitlockerVolume(image: DiskImage): Promise<boolean> {
  try {
    return (await readDiskLayout(diskBytes(image))).partitions.some((p) => p.bitlocker);
  } catch (e) {
    // A partition table that cannot be read holds no BitLocker volume to serve; the LUKS path decides the rest.
    if (e instanceof BitlockerError) return false;
    throw e;
  }
}

/** The backing for `path`: decrypted LUKS/plain, or the plaintext image. */
export async function openExportBacking(path: string, opts: OpenExportOptions = {}): Promise<NbdBacking> {
  const keyGiven = opts.passphraseFile !== undefined || opts.keyFile !== undefined || opts.secretId !== undefined;
  if (opts.plaintext === true && (keyGiven || opts.plain === true || opts.plainSectorSize !== undefined)) {
    throw new VolumeError('ENGINE_BAD_ARGUMENT', 'plaintext exports the image as it is: it takes no key, secret, plain or sector size option');
  }
  const search = parentSearch(opts);
  const image: DiskImage = opts.readOnly === true ? await openImage(path, search) : await openImage(path, { writable: true, ...search });
  try {
    // A disk with BitLocker volumes is served decrypted, read-only (BitLocker is never written here).
    if (opts.plaintext !== true && (opts.bitlockerProtector !== undefined || (await hasBitlockerVolume(image)))) {
      if (opts.readOnly !== true) throw new BitlockerError('BITLK_BAD_ARGUMENT', `${path}: a BitLocker disk is exported read-only; drop --writable`);
      if (opts.keyFile !== undefined || opts.plain === true) throw new BitlockerError('BITLK_BAD_ARGUMENT', `${path}: a BitLocker disk opens with a password, recovery password, startup key or BEK secret, not --key-file or --plain`);
      let protector = opts.bitlockerProtector;
      if (protector === undefined && opts.passphraseFile !== undefined) {
        const { readFile } = await import('node:fs/promises');
        protector = { kind: 'password', password: (await readFile(opts.passphraseFile, 'utf8')).split(/\r?\n/)[0] ?? '' };
      }
      const resolved = await resolveProtector({
        ...(protector !== undefined ? { protector } : {}),
        ...(opts.secretId !== undefined ? { bekSecret: opts.secretId } : {}),
        ...(opts.vault !== undefined ? { vault: opts.vault } : {}),
      });
      const opened = await openDiskVolumes(image, resolved, opts.backend);
      if (resolved.kind === 'startup-key' && opts.secretId !== undefined) resolved.bek.fill(0);
      return await ImageBacking.open(decryptedDisk(image, opened), { readOnly: true });
    }
    // The binary headers and JSON area are enough to tell; the keyslot area (up to 128 MiB) is not read.
    const isLuks = (await readLuksInfo(image)) !== null;
    let secretId = opts.secretId;
    if (!isLuks && !keyGiven) {
      // Found the way decrypt finds a plain volume's key: the vault secret recording the VHD's UUID.
      const named = await findPlainVolumeSecret(image, { ...(opts.vault !== undefined ? { vault: opts.vault } : {}), ...(opts.vaultCredentials !== undefined ? { vaultCredentials: opts.vaultCredentials } : {}) });
      if (opts.plaintext === true) {
        if (named !== null) {
          throw new VolumeError('ENGINE_PLAINTEXT_REFUSED', `${path}: a vault secret names this image (a plain dm-crypt volume): it is served decrypted with its key, never as plaintext; drop --plaintext`);
        }
        return await ImageBacking.open(image, { readOnly: opts.readOnly === true });
      }
      if (named === null && opts.plain === true) {
        throw new VolumeError('ENGINE_NO_KEY_SOURCE', `${path}: no vault secret names this plain volume; give --key-file or --secret`);
      }
      if (named === null) {
        throw new VolumeError(
          'ENGINE_PLAINTEXT_NOT_CONFIRMED',
          `${path}: no LUKS header and no vault secret names it, so it is plaintext or a plain volume whose key is elsewhere; ` +
            'if it really is plaintext, pass --plaintext; if it is a plain volume, give --key-file or --secret',
        );
      }
      secretId = named;
    } else if (isLuks && opts.plaintext === true) {
      throw new VolumeError('ENGINE_PLAINTEXT_REFUSED', `${path}: it has a LUKS header, so it is encrypted, not plaintext; drop --plaintext to serve it decrypted`);
    }
    const unlocked = await unlockImage(image, {
      ...(opts.passphraseFile !== undefined ? { passphraseFile: opts.passphraseFile } : {}),
      ...(opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}),
      ...(opts.vault !== undefined ? { vault: opts.vault } : {}),
      ...(opts.vaultCredentials !== undefined ? { vaultCredentials: opts.vaultCredentials } : {}),
      ...(opts.usePkcs11Token === true ? { usePkcs11Token: true } : {}),
      ...(secretId !== undefined ? { secretId } : {}),
      ...(opts.plainSectorSize !== undefined ? { plain: { sectorSize: opts.plainSectorSize } } : {}),
    });
    let xts;
    let directFile: DirectReadFile | null = null;
    try {
      xts = createXts(unlocked.volumeKey, opts.backend !== undefined ? { backend: opts.backend } : {});
      // Raw and fixed VHD containers map virtual offsets to file offsets 1:1, so the reply threads can read the
      // file directly; a dynamic VHD's allocated blocks are contiguous in its file too (they use fileSpan).
      const fileMapped = image.format === 'raw' || image.format === 'vhd-fixed' || image.format === 'vhd-dynamic';
      if (opts.replyThreads !== false && fileMapped && xts.backend === 'native') {
        directFile = DirectReadFile.open(path, unlocked.volumeKey, xts.kernel);
      }
    } finally {
      unlocked.volumeKey.fill(0);
    }
    try {
      return await EncryptedBacking.open(image, xts, unlocked.layout, {
        readOnly: opts.readOnly === true,
        ...(directFile !== null ? { directFile } : {}),
      });
    } catch (e) {
      xts.dispose();
      directFile?.dispose();
      throw e;
    }
  } catch (e) {
    await image.close();
    throw e;
  }
}
