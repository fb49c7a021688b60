/**
 * Writing a whole file so that a reader sees the old file or the new one, never a part: a temp file beside it
 * (mode 0600), fsynced, then renamed over the path, or with `noClobber` hard-linked to it, which fails with EEXIST
 * on an existing file. On failure the temp file is removed and the error thrown as the system gave it.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export function writeFileAtomic(path: string, data: Uint8Array, noClobber = false): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  let open = true;
  try {
    writeSync(fd, data);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    if (!noClobber) {
      renameSync(tmp, path);
      return;
    }
    linkSync(tmp, path);
    unlinkSync(tmp);
  } catch (e) {
    if (open) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // Already renamed or linked away: nothing left to remove.
    }
    throw e;
  }
}
