/**
 * exportImageKey: the secrets that open an image, written out for the standard tools. The keyslot passphrase
 * (for `cryptsetup open --key-file`, QEMU's `secret` object, nbdkit's luks filter) and the volume key (the LUKS
 * master key, raw binary as cryptsetup's --volume-key-file takes it; a plain volume's raw key).
 *
 * They come from the vault exactly as decrypt gets them (unlockImageWithSecret: the same lookup, the same vault
 * unseal, audited by the vault, needing the same permissions), and the passphrase is written only after it has
 * opened a keyslot. Files are created 0600 under a temporary name with O_EXCL, filled, synced, and then linked
 * to the destination (which fails if it exists) or, with force, renamed over it: the destination name never holds
 * a partial key and never a file anyone else may read. No trailing newline: cryptsetup reads a key file whole.
 */
import { rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { openImage, parentSearch, type ParentSearchOptions } from '../../image/index.js';
import { EngineError } from '../errors.js';
import { readLuksInfo, unlockImageWithSecret, wipeSecret, type UnlockImageOptions } from '../../volume/index.js';
import { publishNewFile } from '../../new-file.js';

/** The destination that means standard output, given on purpose. */
export const STDOUT_DEST = '-';

export interface ExportImageKeyOptions extends ParentSearchOptions, Pick<UnlockImageOptions, 'vault' | 'vaultCredentials' | 'secretId' | 'signal' | 'usePkcs11Token'> {
  /** Where to write the keyslot passphrase (LUKS only); '-' for standard output. */
  readonly passphraseFile?: string;
  /** Where to write the volume key (raw bytes); '-' for standard output. */
  readonly volumeKeyFile?: string;
  /** Replace an existing destination file. */
  readonly force?: boolean;
}

export interface ExportImageKeyResult {
  readonly image: string;
  readonly format: 'luks1' | 'luks2' | 'plain';
  /** The destination written (absolute path, or '-'), or null. */
  readonly passphraseFile: string | null;
  readonly passphraseBytes: number | null;
  readonly volumeKeyFile: string | null;
  readonly volumeKeyBits: number | null;
  readonly keyslot: number | null;
  readonly secretId: string | null;
  readonly vaultUri: string | null;
}

function destination(v: string | undefined): string | null {
  if (v === undefined) return null;
  if (v === '') throw new EngineError('ENGINE_BAD_ARGUMENT', "an output file name is empty (give a path, or '-' for standard output)");
  return v === STDOUT_DEST ? STDOUT_DEST : resolve(v);
}

/** Write the image's keyslot passphrase and/or volume key, unsealed through the vault as decrypt unseals them. */
export async function exportImageKey(path: string, opts: ExportImageKeyOptions): Promise<ExportImageKeyResult> {
  const passDest = destination(opts.passphraseFile);
  const keyDest = destination(opts.volumeKeyFile);
  if (passDest === null && keyDest === null) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', "nothing to export: give --passphrase-file and/or --volume-key-file (a file, or '-' for standard output)");
  }
  if (passDest !== null && passDest === keyDest) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `the passphrase and the volume key cannot both go to ${passDest === STDOUT_DEST ? 'standard output' : passDest}`);
  }
  const force = opts.force === true;
  const image = await openImage(path, parentSearch(opts));
  try {
    const source = await stat(path);
    for (const d of [passDest, keyDest]) {
      if (d === null || d === STDOUT_DEST) continue;
      const st = await stat(d).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return null;
        throw e;
      });
      if (st && st.ino === source.ino && st.dev === source.dev) throw new EngineError('ENGINE_SAME_FILE', `${d} is the image; choose another file`);
      if (st && !force) throw new EngineError('ENGINE_DEST_EXISTS', `${d} already exists (use --force to replace it)`);
    }
    // Decided from the header before anything is unsealed: a plain volume has no keyslot passphrase.
    const info = await readLuksInfo(image);
    if (!info && passDest !== null) {
      throw new EngineError('ENGINE_BAD_ARGUMENT', `${path}: a plain volume has no keyslot passphrase; export its key with --volume-key-file`);
    }
    // Only the vault: the caller's own passphrase or key file is already in their hands.
    const unlocked = await unlockImageWithSecret(image, { vault: opts.vault, vaultCredentials: opts.vaultCredentials, secretId: opts.secretId, signal: opts.signal, usePkcs11Token: opts.usePkcs11Token });
    const written: string[] = [];
    try {
      let passphraseBytes: number | null = null;
      if (passDest !== null) {
        const s = unlocked.secret;
        if (!s || !('passphrase' in s) || !(s.passphrase instanceof Uint8Array)) {
          throw new EngineError('ENGINE_NO_KEY_SOURCE', `${path}: the keyslot did not open with a vault secret`);
        }
        await writeSecret(passDest, s.passphrase, force, written);
        passphraseBytes = s.passphrase.length;
      }
      if (keyDest !== null) await writeSecret(keyDest, unlocked.volumeKey, force, written);
      return {
        image: resolve(path),
        format: unlocked.layout.format,
        passphraseFile: passDest,
        passphraseBytes,
        volumeKeyFile: keyDest,
        volumeKeyBits: keyDest !== null ? unlocked.volumeKey.length * 8 : null,
        keyslot: unlocked.keyslot,
        secretId: unlocked.secretId,
        vaultUri: unlocked.vaultUri,
      };
    } catch (e) {
      // A half-done export leaves nothing behind: the files this call created go.
      await Promise.allSettled(written.map((f) => rm(f, { force: true })));
      throw e;
    } finally {
      unlocked.volumeKey.fill(0);
      wipeSecret(unlocked.secret);
    }
  } finally {
    await image.close();
  }
}

/** Write `bytes` to `dest` (see the module comment), or to standard output for '-'; records created files. */
async function writeSecret(dest: string, bytes: Uint8Array, force: boolean, written: string[]): Promise<void> {
  if (dest === STDOUT_DEST) {
    // The callback fires once the stream is done with the buffer, so the caller's wipe comes after the write.
    await new Promise<void>((ok, fail) => process.stdout.write(bytes, (e) => (e ? fail(e) : ok())));
    return;
  }
  if ((await publishNewFile(dest, bytes, { replace: force })) === 'exists') {
    throw new EngineError('ENGINE_DEST_EXISTS', `${dest} appeared meanwhile; not overwriting`);
  }
  written.push(dest);
}
