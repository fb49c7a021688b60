/**
 * A small file (a key, a header backup) written whole and published under its name only once complete and durable:
 * a temporary file beside it is created 0600 with O_EXCL, filled and fsynced, then linked to the name (link fails
 * with EEXIST instead of replacing, so a file that appeared meanwhile is left alone) or, with `replace`, renamed over
 * it; then the directory is fsynced. The name never holds a partial file, nor one anyone else may read.
 */
import { randomBytes } from 'node:crypto';
import { link, open, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** fsync a directory, so that a rename or link in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write `bytes` to a new file `dest`; 'exists' (nothing written) when `dest` exists and `replace` is not set. */
export async function publishNewFile(dest: string, bytes: Uint8Array, opts: { readonly replace?: boolean } = {}): Promise<'written' | 'exists'> {
  const tmp = join(dirname(dest), `.${basename(dest)}.${randomBytes(6).toString('hex')}.vhdcrypt-tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    // The umask may only take bits away; set exactly 0600 (a umask of 0277 would leave the owner unable to rewrite it).
    await fh.chmod(0o600);
    await fh.writeFile(bytes);
    await fh.sync();
    await fh.close();
    if (opts.replace === true) {
      await rename(tmp, dest);
    } else {
      try {
        await link(tmp, dest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
          await unlink(tmp);
          return 'exists';
        }
        throw e;
      }
      await unlink(tmp);
    }
    await syncDir(dirname(dest));
    return 'written';
  } catch (e) {
    await Promise.allSettled([fh.close()]);
    await rm(tmp, { force: true });
    throw e;
  }
}
