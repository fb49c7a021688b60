/** Opening a source read-only through the image layer's registry of source kinds (a file, or a registered kind such as an NBD export). */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isFileLocation, type DiskImage } from '../../image/index.js';

export { openSource } from '../../image/index.js';

export interface SourceIdentity {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

/** True when the source is not a file of this machine (no same-file check, no file mode to copy). */
export function isRemoteSource(src: string): boolean {
  return !isFileLocation(src);
}

/** What a resume checks to know the source is the same: path, size and mtime (an export: its URI and size). */
export async function sourceIdentity(src: string, image: DiskImage): Promise<SourceIdentity> {
  if (isRemoteSource(src)) return { path: src, size: Number(image.virtualSize), mtimeMs: 0 };
  const st = await stat(src);
  return { path: resolve(src), size: st.size, mtimeMs: st.mtimeMs };
}
