/** openImage: VHD (by footer cookie, or by a .vhd name) or raw. */
import { open, realpath } from 'node:fs/promises';
import { ImageError } from './errors.js';
import { FlatImage } from './flat-image.js';
import { looksLikeVhd, openVhd } from './vhd-open.js';
import type { DiskImage, WritableImage } from './types.js';

export interface OpenImageOptions {
  /** Open for write (fixed, dynamic, differencing child, raw); parents of a chain stay read-only. */
  readonly writable?: boolean;
  /** 'auto' (default): VHD when a footer cookie is found or the name ends in .vhd, else raw. */
  readonly format?: 'auto' | 'vhd' | 'raw';
}

/** Open a disk image; a differencing VHD opens with its whole parent chain. */
export function openImage(path: string, opts: OpenImageOptions & { writable: true }): Promise<WritableImage>;
export function openImage(path: string, opts?: OpenImageOptions): Promise<DiskImage>;
export async function openImage(path: string, opts: OpenImageOptions = {}): Promise<DiskImage | WritableImage> {
  const writable = opts.writable === true;
  const fh = await open(path, writable ? 'r+' : 'r');
  try {
    const size = (await fh.stat()).size;
    const format = opts.format ?? 'auto';
    const vhd = format === 'vhd' || (format === 'auto' && (/\.vhd$/i.test(path) || (await looksLikeVhd(fh, size))));
    if (vhd) return await openVhd(fh, path, writable, { seen: new Set([await realpath(path)]), depth: 0 });
    if (size % 512 !== 0) {
      throw new ImageError('IMAGE_BAD_SIZE', `${path}: raw image of ${size} bytes is not a whole number of 512-byte sectors`);
    }
    return new FlatImage(fh, { format: 'raw', path, virtualSize: BigInt(size), writable }, false);
  } catch (e) {
    await fh.close(); // report the open error; the handle is ours to release
    throw e;
  }
}
