/** Opening a source read-only: an image file, or an NBD export (nbd://, nbd+unix://) read through our NBD client. */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { openImage, parentSearch, type DiskImage, type ParentSearchOptions } from '../image/index.js';
import { isNbdUri } from '../nbd/uri.js';

export interface SourceIdentity {
  readonly path: string;
  readonly size: number;
  readonly mtimeMs: number;
}

export function isRemoteSource(src: string): boolean {
  return isNbdUri(src);
}

/** Open a source; `search` says where a differencing image's parents may be. */
export async function openSource(src: string, search: ParentSearchOptions = {}): Promise<DiskImage> {
  if (!isNbdUri(src)) return openImage(src, parentSearch(search));
  // The NBD client is loaded only for NBD sources (it is a fifth of the modules a file job would load).
  const { openNbdImage } = await import('../nbd/nbd-image.js');
  return openNbdImage(src);
}

/** What a resume checks to know the source is the same: path, size and mtime (an export: its URI and size). */
export async function sourceIdentity(src: string, image: DiskImage): Promise<SourceIdentity> {
  if (isNbdUri(src)) return { path: src, size: Number(image.virtualSize), mtimeMs: 0 };
  const st = await stat(src);
  return { path: resolve(src), size: st.size, mtimeMs: st.mtimeMs };
}
