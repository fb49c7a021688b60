/**
 * Open what `vhdcrypt serve` exports: an image holding a LUKS volume (or a
 * plain dm-crypt volume, when a key is given) is served decrypted; any other
 * image is served as it is.
 */
import { createXts, type BackendChoice } from '../crypto/index.js';
import { openImage, parentSearch, type DiskImage, type ParentSearchOptions } from '../image/index.js';
import { readLuksInfo, unlockImage } from '../engine/index.js';
import type { NbdBacking } from './backing.js';
import { startDecryptReaders, type DecryptReader } from './decrypt-readers.js';
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
  readonly plainSectorSize?: 512 | 4096;
  readonly backend?: BackendChoice;
  /**
   * Raw and fixed VHD containers: 0 = reads decrypt on the main thread; otherwise, with the native backend
   * on Linux, each connection gets a native reply thread, and elsewhere this many worker threads decrypt
   * (default cores - 1, at most 4).
   */
  readonly readerThreads?: number;
}

/** The backing for `path`: decrypted LUKS/plain, or the plaintext image. */
export async function openExportBacking(path: string, opts: OpenExportOptions = {}): Promise<NbdBacking> {
  const search = parentSearch(opts);
  const image: DiskImage = opts.readOnly === true ? await openImage(path, search) : await openImage(path, { writable: true, ...search });
  try {
    // The binary headers and JSON area are enough to tell; the keyslot area (up to 128 MiB) is not read.
    const isLuks = (await readLuksInfo(image)) !== null;
    const wantsPlain = opts.plain === true || (!isLuks && opts.keyFile !== undefined);
    if (!isLuks && !wantsPlain) return await ImageBacking.open(image, { readOnly: opts.readOnly === true });
    const unlocked = await unlockImage(image, {
      ...(opts.passphraseFile !== undefined ? { passphraseFile: opts.passphraseFile } : {}),
      ...(opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}),
      ...(opts.vault !== undefined ? { vault: opts.vault } : {}),
      ...(opts.plainSectorSize !== undefined ? { plain: { sectorSize: opts.plainSectorSize } } : {}),
    });
    let xts;
    let reader: DecryptReader | null = null;
    let directFile: DirectReadFile | null = null;
    try {
      xts = createXts(unlocked.volumeKey, opts.backend !== undefined ? { backend: opts.backend } : {});
      // Raw and fixed VHD containers map virtual offsets to file offsets 1:1, so other threads can read the file
      // directly; a dynamic VHD's allocated blocks are contiguous in its file too (the reply threads use fileSpan).
      const fileMapped = opts.readerThreads !== 0 && (image.format === 'raw' || image.format === 'vhd-fixed');
      if (opts.readerThreads !== 0 && (fileMapped || image.format === 'vhd-dynamic') && xts.backend === 'native') {
        directFile = DirectReadFile.open(path, unlocked.volumeKey, xts.kernel);
      }
      if (fileMapped && directFile === null) {
        reader = startDecryptReaders(path, unlocked.volumeKey, {
          ...(opts.readerThreads !== undefined ? { threads: opts.readerThreads } : {}),
          ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
        });
      }
    } finally {
      unlocked.volumeKey.fill(0);
    }
    try {
      return await EncryptedBacking.open(image, xts, unlocked.layout, {
        readOnly: opts.readOnly === true,
        ...(reader !== null ? { reader } : {}),
        ...(directFile !== null ? { directFile } : {}),
      });
    } catch (e) {
      xts.dispose();
      directFile?.dispose();
      await reader?.close();
      throw e;
    }
  } catch (e) {
    await image.close();
    throw e;
  }
}
