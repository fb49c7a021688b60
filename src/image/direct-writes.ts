/**
 * Direct writes (Linux O_DIRECT) for the engine's large batch writes: the data
 * goes from our buffer to the device without a page-cache copy or writeback
 * work, which for batches this large costs more kernel CPU than the copy saves
 * (compare `dd bs=4M conv=fsync` with `dd bs=4M oflag=direct`).
 * O_DIRECT needs the buffer address, file offset and length aligned to the
 * device's logical block size (open(2), "O_DIRECT"). We ask whole 4096-byte
 * pages of all three: then a direct write never covers part of a page that a
 * buffered write (a VHD bitmap, BAT entry or footer) may hold dirty in the page
 * cache, whose later writeback would undo it. The image falls back to buffered
 * writes when the kernel still says EINVAL.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { addressMisalignment } from './native-io.js';

/** Alignment of batch buffers meant for direct writes. */
export const DIRECT_ADDRESS_ALIGNMENT = 4096;
const DIRECT_SIZE_ALIGNMENT = 4096;

/** An O_DIRECT write handle on `path`, or null where the platform or file system has none (e.g. tmpfs: EINVAL). */
export async function openDirectWriter(path: string): Promise<FileHandle | null> {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (typeof flag !== 'number' || flag === 0) return null;
  // Only an optimisation: any refusal leaves the buffered path, which reports real I/O errors itself.
  return open(path, constants.O_WRONLY | flag).catch(() => null);
}

/** True when writing `data` at `position` meets O_DIRECT's alignment rules. */
export function directWriteAligned(data: Uint8Array, position: number): boolean {
  return (
    data.length > 0 &&
    position % DIRECT_SIZE_ALIGNMENT === 0 &&
    data.length % DIRECT_SIZE_ALIGNMENT === 0 &&
    addressMisalignment(data, DIRECT_ADDRESS_ALIGNMENT) === 0
  );
}
