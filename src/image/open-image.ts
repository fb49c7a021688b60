/** openImage: VHD (by footer cookie, or by a .vhd name) or raw. */
import { open, realpath, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ImageError } from './errors.js';
import { FlatImage } from './flat-image.js';
import { CONFINED_PARENTS, looksLikeVhd, openVhd, type ParentPolicy } from './vhd-open.js';
import type { DiskImage, WritableImage } from './types.js';

/**
 * Where a differencing chain's parents may be found. By default a parent
 * locator is followed only to a file inside the child's own directory (the
 * relative W2ru locator, without ../ leading out of it); an absolute or
 * escaping locator only into one of `parentDirs` (checked by real path), or
 * anywhere with `allowAbsoluteParents`.
 */
export interface ParentSearchOptions {
  /** Directories whose files (and subdirectories') a parent locator may name. */
  readonly parentDirs?: readonly string[];
  /** Follow any parent locator, wherever it leads (only for images you trust). */
  readonly allowAbsoluteParents?: boolean;
}

/** Only the parent-search fields of a wider options object (so no other option of it reaches openImage). */
export function parentSearch(o: ParentSearchOptions): ParentSearchOptions {
  return {
    ...(o.parentDirs !== undefined ? { parentDirs: o.parentDirs } : {}),
    ...(o.allowAbsoluteParents !== undefined ? { allowAbsoluteParents: o.allowAbsoluteParents } : {}),
  };
}

/** The policy for `opts`: each directory must exist, and is compared by its real path. */
export async function parentPolicy(opts: ParentSearchOptions = {}): Promise<ParentPolicy> {
  const given = opts.parentDirs ?? [];
  if (!Array.isArray(given)) throw new ImageError('IMAGE_BAD_ARGUMENT', 'parentDirs expected an array of directory paths');
  if (given.length === 0 && opts.allowAbsoluteParents !== true) return CONFINED_PARENTS;
  const dirs: string[] = [];
  const namedDirs: string[] = [];
  for (const d of given) {
    if (typeof d !== 'string' || d === '') throw new ImageError('IMAGE_BAD_ARGUMENT', 'parentDirs expected directory paths');
    let real: string;
    try {
      real = await realpath(resolve(d));
      if (!(await stat(real)).isDirectory()) throw new ImageError('IMAGE_BAD_ARGUMENT', `parent directory ${d} is not a directory`);
    } catch (e) {
      if (e instanceof ImageError) throw e;
      throw new ImageError('IMAGE_BAD_ARGUMENT', `parent directory ${d} cannot be used: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
    dirs.push(real);
    namedDirs.push(resolve(d));
  }
  return { dirs, namedDirs, anywhere: opts.allowAbsoluteParents === true };
}

export interface OpenImageOptions extends ParentSearchOptions {
  /** Open for write (fixed, dynamic, differencing child, raw); parents of a chain stay read-only. */
  readonly writable?: boolean;
  /** 'auto' (default): VHD when a footer cookie is found or the name ends in .vhd, else raw. */
  readonly format?: 'auto' | 'vhd' | 'raw';
  /**
   * A differencing VHD opened alone (read-only use: its own blocks and bitmaps), its parent neither looked for nor
   * needed; the sectors it does not hold read as zeros.
   */
  readonly withoutParent?: boolean;
}

/** Open a disk image; a differencing VHD opens with its whole parent chain. */
export function openImage(path: string, opts: OpenImageOptions & { writable: true }): Promise<WritableImage>;
export function openImage(path: string, opts?: OpenImageOptions): Promise<DiskImage>;
export async function openImage(path: string, opts: OpenImageOptions = {}): Promise<DiskImage | WritableImage> {
  const writable = opts.writable === true;
  const fh = await open(path, writable ? 'r+' : 'r');
  try {
    const st = await fh.stat();
    // open(2) takes a directory read-only; say so with its name before a read fails with a bare EISDIR.
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, open '${path}'`), { code: 'EISDIR', syscall: 'open', path });
    const size = st.size;
    const format = opts.format ?? 'auto';
    const vhd = format === 'vhd' || (format === 'auto' && (/\.vhd$/i.test(path) || (await looksLikeVhd(fh, size))));
    if (vhd) return await openVhd(fh, path, writable, { seen: new Set([await realpath(path)]), depth: 0, parents: await parentPolicy(opts), withoutParent: opts.withoutParent === true });
    if (size % 512 !== 0) {
      throw new ImageError('IMAGE_BAD_SIZE', `${path}: raw image of ${size} bytes is not a whole number of 512-byte sectors`);
    }
    return new FlatImage(fh, { format: 'raw', path, virtualSize: BigInt(size), writable }, false);
  } catch (e) {
    await fh.close(); // report the open error; the handle is ours to release
    throw e;
  }
}
