/** Header backup to a file and restore from it (like luksHeaderBackup / luksHeaderRestore). */
import { stat } from 'node:fs/promises';
import { LuksError } from './errors.js';
import { openHeaderIo, withHeaderIo, type LuksTarget } from './header-io.js';
import { publishNewFile } from '../new-file.js';
import { readLuksHeader, volumeInfoOf } from './volume-info.js';
import { headerRegionBytes } from './dump.js';
import { LUKS_MAX_HEADER_REGION } from './on-disk.js';

/** Largest region we copy. */
const MAX_REGION = Number(LUKS_MAX_HEADER_REGION);

/** Copies the header region of `device` to a new file `backupFile` (temp file, fsync, rename). */
export async function backupHeader(device: LuksTarget, backupFile: string): Promise<{ bytes: number }> {
  const region = await withHeaderIo(device, false, async (io) => {
    const h = await readLuksHeader(io);
    const n = headerRegionBytes(h);
    if (n > MAX_REGION) throw new LuksError('LUKS_BAD_LAYOUT', `header region of ${n} bytes exceeds ${MAX_REGION}`);
    return io.read(0, n, 'header region');
  });
  if ((await publishNewFile(backupFile, region)) === 'exists') {
    throw new LuksError('LUKS_DEST_EXISTS', `${backupFile} exists; not overwriting`);
  }
  return { bytes: region.length };
}

/** Writes a validated backup's header region over the start of `device`. */
export async function restoreHeader(device: LuksTarget, backupFile: string): Promise<{ bytes: number }> {
  const st = await stat(backupFile);
  if (st.size > MAX_REGION) throw new LuksError('LUKS_BAD_LAYOUT', `backup ${backupFile} of ${st.size} bytes exceeds ${MAX_REGION}`);
  const backup = await withHeaderIo(backupFile, false, (io) => io.read(0, Number(st.size), 'backup file'));
  const io0 = await openHeaderIo(backup, false);
  const h = await readLuksHeader(io0);
  const info = volumeInfoOf(h);
  const n = headerRegionBytes(h);
  if (n > backup.length) throw new LuksError('LUKS_TRUNCATED', `backup ${backupFile} holds ${backup.length} bytes; its header needs ${n}`);
  return withHeaderIo(device, true, async (io) => {
    if (io.size < info.dataOffset) throw new LuksError('LUKS_TRUNCATED', `${io.name} (${io.size} bytes) is smaller than the backup's data offset ${info.dataOffset}`);
    await io.write(0, backup.subarray(0, n));
    await io.sync();
    return { bytes: n };
  });
}
