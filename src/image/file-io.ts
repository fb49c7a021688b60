/** Positional file I/O that never returns short: loops, and names truncation as an ImageError. */
import type { FileHandle } from 'node:fs/promises';
import { ImageError, type ImageErrorCode } from './errors.js';

/** Read up to `into.length` bytes at `position`; returns the count (less only at end of file). */
export async function readAt(fh: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Read exactly `into.length` bytes at `position` or throw `code` naming `what`. */
export async function readExactly(
  fh: FileHandle,
  into: Uint8Array,
  position: number,
  what: string,
  code: ImageErrorCode = 'VHD_TRUNCATED',
): Promise<void> {
  const n = await readAt(fh, into, position);
  if (n !== into.length) {
    throw new ImageError(code, `${what}: file ends ${into.length - n} bytes short of offset ${position + into.length}`);
  }
}

/** Write all of `data` at `position`. */
export async function writeAt(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Write `parts` back to back from `position` (one writev when the kernel takes it all). */
export async function writeVectorAt(fh: FileHandle, parts: readonly Uint8Array[], position: number): Promise<void> {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const { bytesWritten } = await fh.writev(parts as Uint8Array[], position);
  if (bytesWritten === total) return;
  // Short writev: finish piece by piece.
  let skip = bytesWritten;
  let pos = position;
  for (const p of parts) {
    if (skip >= p.length) {
      skip -= p.length;
      pos += p.length;
      continue;
    }
    await writeAt(fh, p.subarray(skip), pos + skip);
    pos += p.length;
    skip = 0;
  }
}
