/** Opening a source read-only: an image file, or an NBD export (nbd://, nbd+unix://) read through our NBD client. */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { openImage, type DiskImage } from '../image/index.js';
import { isNbdUri, openNbdImage } from '../nbd/index.js';

export interface SourceIdentity {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

export function isRemoteSource(src: string): boolean {
  return isNbdUri(src);
}

export function openSource(src: string): Promise<DiskImage> {
  return isNbdUri(src) ? openNbdImage(src) : openImage(src);
}

/** What a resume checks to know the source is the same: path, size and mtime (an export: its URI and size). */
export async function sourceIdentity(src: string, image: DiskImage): Promise<SourceIdentity> {
  if (isNbdUri(src)) return { path: src, size: Number(image.virtualSize), mtimeMs: 0 };
  const st = await stat(src);
  return { path: resolve(src), size: st.size, mtimeMs: st.mtimeMs };
}
