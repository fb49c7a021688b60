/**
 * Opening a VHD: footer (with the offset-0 copy as fallback for dynamic
 * disks), dynamic header, BAT bounds and overlaps, and the differencing chain
 * through the parent locators.
 */
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ImageError } from './errors.js';
import { readAt, readExactly } from './file-io.js';
import { FlatImage } from './flat-image.js';
import { SparseVhdImage } from './sparse-vhd-image.js';
import {
  BAT_UNALLOCATED,
  DYNAMIC_HEADER_SIZE,
  PlatformCode,
  readBat,
  readDynamicHeader,
  sectorBitmapSize,
  type DynamicHeader,
} from './vhd-dynamic-header.js';
import { VHD_FOOTER_SIZE, VhdDiskType, encodeVhdFooter, readVhdFooter, type VhdFooter } from './vhd-footer.js';
import { MAX_LOCATOR_BYTES, decodeLocatorPath } from './parent-locator.js';
import type { ImageBase } from './image-base.js';

/** BAT entries held in memory at most (64 MiB): 2 TiB in 128 KiB blocks; a hostile size cannot make us allocate more. */
export const MAX_BAT_ENTRIES = 1 << 24;

/** Chains deeper than this are refused (a loop through distinct names, or a hostile chain). */
export const MAX_CHAIN_DEPTH = 256;

/**
 * Where a differencing chain's parents may be. A parent locator is written by
 * whoever made the child, so following it anywhere would let a hostile child
 * export (or encrypt into the attacker's hands) any VHD the user can read.
 */
export interface ParentPolicy {
  /** Real paths of the directories (besides the child's own) a locator may lead into. */
  readonly dirs: readonly string[];
  /** The same directories as the caller named them (absolute), which a locator's text may use. */
  readonly namedDirs: readonly string[];
  /** Follow a locator wherever it leads (trusted images only). */
  readonly anywhere: boolean;
}

export const CONFINED_PARENTS: ParentPolicy = { dirs: [], namedDirs: [], anywhere: false };

export interface VhdOpenContext {
  /** Real paths of the children above this disk, to detect loops. */
  readonly seen: ReadonlySet<string>;
  readonly depth: number;
  readonly parents: ParentPolicy;
  /** Open a differencing disk alone: its parent is not looked for, and sectors it does not hold read as zeros. */
  readonly withoutParent?: boolean;
}

/** True when `p` is strictly below directory `dir` (both absolute). */
function isInside(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel !== '' && rel !== '..' && !rel.startsWith('..' + path.sep) && !path.isAbsolute(rel);
}

interface FooterChoice {
  readonly footer: VhdFooter;
  readonly fromEnd: boolean;
  readonly warnings: string[];
}

async function chooseFooter(fh: FileHandle, fileSize: number, where: string): Promise<FooterChoice> {
  if (fileSize < VHD_FOOTER_SIZE) throw new ImageError('VHD_TRUNCATED', `${where}: ${fileSize} bytes is too short for a VHD footer`);
  const end = new Uint8Array(VHD_FOOTER_SIZE);
  await readExactly(fh, end, fileSize - VHD_FOOTER_SIZE, `${where}: footer`);
  let endError: ImageError;
  try {
    return { footer: readVhdFooter(end), fromEnd: true, warnings: [] };
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    endError = e;
  }
  // Dynamic disks keep a copy at offset 0 (spec "Dynamic Hard Disk Image"): use it, and say so.
  if (fileSize >= 2 * VHD_FOOTER_SIZE) {
    const head = new Uint8Array(VHD_FOOTER_SIZE);
    await readExactly(fh, head, 0, `${where}: footer copy`);
    let copy: VhdFooter | null = null;
    try {
      copy = readVhdFooter(head);
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
    }
    if (copy && copy.diskType !== VhdDiskType.fixed) {
      return {
        footer: copy,
        fromEnd: false,
        warnings: [`${where}: end footer unusable (${endError.message}); using the footer copy at offset 0`],
      };
    }
  }
  throw new ImageError(endError.code, `${where}: ${endError.message}`);
}

/** True when the file starts or ends with a VHD footer cookie (auto-detection). */
export async function looksLikeVhd(fh: FileHandle, fileSize: number): Promise<boolean> {
  const b = new Uint8Array(8);
  if (fileSize >= VHD_FOOTER_SIZE) {
    await readAt(fh, b, fileSize - VHD_FOOTER_SIZE);
    if (Buffer.from(b).toString('latin1') === 'conectix') return true;
    await readAt(fh, b, 0);
    if (Buffer.from(b).toString('latin1') === 'conectix') return true;
  }
  return false;
}

function geometryOf(f: VhdFooter) {
  return { cylinders: f.cylinders, heads: f.heads, sectorsPerTrack: f.sectorsPerTrack };
}

/** Open the VHD behind `fh` (taking ownership of it); parents open read-only. */
export async function openVhd(fh: FileHandle, filePath: string, writable: boolean, ctx: VhdOpenContext): Promise<ImageBase> {
  const fileSize = (await fh.stat()).size;
  const where = filePath;
  const { footer, fromEnd, warnings } = await chooseFooter(fh, fileSize, where);
  if (footer.savedState !== 0) warnings.push(`${where}: the disk is marked as in a saved state`);
  const virtualSize = footer.currentSize;
  const common = {
    path: filePath,
    virtualSize,
    writable,
    uuid: footer.uniqueId,
    geometry: geometryOf(footer),
    footer,
  };

  if (footer.diskType === VhdDiskType.fixed) {
    const dataEnd = BigInt(fileSize - VHD_FOOTER_SIZE);
    if (dataEnd < virtualSize) {
      throw new ImageError('VHD_TRUNCATED', `${where}: fixed disk of ${virtualSize} bytes but only ${dataEnd} data bytes before the footer`);
    }
    if (dataEnd > virtualSize) warnings.push(`${where}: ${dataEnd - virtualSize} bytes between the disk data and the footer are ignored`);
    return new FlatImage(fh, { ...common, format: 'vhd-fixed', warnings }, false);
  }

  if (fromEnd && fileSize >= 2 * VHD_FOOTER_SIZE) {
    const head = new Uint8Array(VHD_FOOTER_SIZE);
    await readExactly(fh, head, 0, `${where}: footer copy`);
    const end = encodeVhdFooter(footer);
    if (!Buffer.from(head).equals(Buffer.from(end))) warnings.push(`${where}: the footer copy at offset 0 differs from the end footer`);
  }

  // Dynamic header.
  if (footer.dataOffset < 512n || footer.dataOffset > BigInt(fileSize)) {
    throw new ImageError('VHD_BAD_DYNAMIC_HEADER', `${where}: footer data offset ${footer.dataOffset} does not point inside the file`);
  }
  const headerPos = Number(footer.dataOffset);
  const hbytes = new Uint8Array(DYNAMIC_HEADER_SIZE);
  await readExactly(fh, hbytes, headerPos, `${where}: dynamic disk header`);
  let header: DynamicHeader;
  try {
    header = readDynamicHeader(hbytes);
  } catch (e) {
    throw e instanceof ImageError ? new ImageError(e.code, `${where}: ${e.message}`) : e;
  }
  const bs = header.blockSize;
  const blocks = Number((virtualSize + BigInt(bs) - 1n) / BigInt(bs));
  if (blocks > MAX_BAT_ENTRIES) {
    throw new ImageError('VHD_BAD_TABLE', `${where}: a ${virtualSize}-byte disk of ${bs}-byte blocks has ${blocks} blocks, over the ${MAX_BAT_ENTRIES} we hold in memory`);
  }
  if (header.maxTableEntries < blocks) {
    throw new ImageError('VHD_BAD_TABLE', `${where}: BAT has ${header.maxTableEntries} entries but a ${virtualSize}-byte disk of ${bs}-byte blocks needs ${blocks}`);
  }
  if (header.tableOffset > BigInt(fileSize)) {
    throw new ImageError('VHD_BAD_TABLE', `${where}: BAT offset ${header.tableOffset} is past the end of the ${fileSize}-byte file`);
  }
  const batOffset = Number(header.tableOffset);
  const batBytes = header.maxTableEntries * 4;
  if (batOffset + batBytes > fileSize) {
    if (header.maxTableEntries > blocks) {
      throw new ImageError('VHD_BAD_TABLE', `${where}: max table entries ${header.maxTableEntries} is inconsistent with a disk of ${blocks} blocks and runs past the end of the file`);
    }
    throw new ImageError('VHD_TRUNCATED', `${where}: BAT of ${header.maxTableEntries} entries at ${batOffset} runs past the end of the ${fileSize}-byte file`);
  }
  // Only entries that map the virtual disk are read: memory follows the disk's block count, bounded by the file.
  const raw = new Uint8Array(blocks * 4);
  await readExactly(fh, raw, batOffset, `${where}: BAT`);
  const bat = readBat(raw, blocks);

  // Metadata regions blocks must avoid.
  const regions: Array<[number, number, string]> = [
    [headerPos, headerPos + DYNAMIC_HEADER_SIZE, 'the dynamic header'],
    [batOffset, batOffset + batBytes, 'the BAT'],
  ];
  if (fromEnd) regions.push([0, VHD_FOOTER_SIZE, 'the footer copy'], [fileSize - VHD_FOOTER_SIZE, fileSize, 'the end footer']);
  else regions.push([0, VHD_FOOTER_SIZE, 'the footer copy']);
  const differencing = footer.diskType === VhdDiskType.differencing;
  const locatorPayloads: Array<{ code: number; bytes: Uint8Array }> = [];
  if (differencing) {
    for (const loc of header.parentLocators) {
      if (loc.platformCode === PlatformCode.none) continue;
      const off = loc.platformDataOffset;
      const len = loc.platformDataLength;
      if (len === 0) continue;
      if (len > MAX_LOCATOR_BYTES || off + BigInt(len) > BigInt(fileSize)) {
        throw new ImageError('VHD_BAD_LOCATOR', `${where}: parent locator of ${len} bytes at ${off} is outside the file or too long`);
      }
      const bytes = new Uint8Array(len);
      await readExactly(fh, bytes, Number(off), `${where}: parent locator`);
      locatorPayloads.push({ code: loc.platformCode, bytes });
      regions.push([Number(off), Number(off) + len, 'a parent locator']);
    }
  }
  const bitmapSize = sectorBitmapSize(bs);
  const nextFree = validateBlocks(bat, bitmapSize + bs, regions, fileSize, fromEnd, where);

  let parent: ImageBase | null = null;
  if (differencing && ctx.withoutParent !== true) {
    parent = await openParent(filePath, header, locatorPayloads, ctx);
  }
  const image = new SparseVhdImage(
    fh,
    {
      ...common,
      format: differencing ? 'vhd-differencing' : 'vhd-dynamic',
      warnings,
      blockSize: bs,
      dynamicHeader: header,
      ...(parent ? { parent } : {}),
    },
    { bat, batOffset, blockSize: bs, bitmapSize, nextFree, footerBytes: encodeVhdFooter(footer), repairEndFooter: !fromEnd, fileSize },
    parent ? { image: parent } : null,
  );
  return image;
}

/**
 * Every allocated block must lie inside the file, clear of the metadata and of
 * every other block. Returns the first free offset after all blocks and metadata.
 */
function validateBlocks(
  bat: Uint32Array,
  span: number,
  regions: Array<[number, number, string]>,
  fileSize: number,
  endFooterValid: boolean,
  where: string,
): number {
  let count = 0;
  for (let i = 0; i < bat.length; i++) {
    const e = bat[i]!;
    if (e === BAT_UNALLOCATED) continue;
    const s = e * 512;
    if (s >= fileSize) throw new ImageError('VHD_BAT_OUT_OF_RANGE', `${where}: BAT entry ${i} points at ${s}, past the end of the ${fileSize}-byte file`);
    if (s + span > fileSize) throw new ImageError('VHD_TRUNCATED', `${where}: block ${i} at ${s} runs past the end of the ${fileSize}-byte file`);
    count++;
  }
  // Sorted sector offsets (a typed-array numeric sort); block numbers are looked up again only for messages.
  const starts = new Float64Array(count);
  let k = 0;
  for (let i = 0; i < bat.length; i++) if (bat[i] !== BAT_UNALLOCATED) starts[k++] = bat[i]! * 512;
  starts.sort();
  const blockAt = (s: number) => bat.indexOf(s / 512);
  for (const [a, b, what] of regions) {
    // First block that ends after a; it overlaps [a, b) when it starts before b.
    let lo = 0;
    let hi = count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! + span <= a) lo = mid + 1;
      else hi = mid;
    }
    if (lo < count && starts[lo]! < b) {
      const blk = blockAt(starts[lo]!);
      if (what === 'the end footer' && endFooterValid) {
        throw new ImageError('VHD_TRUNCATED', `${where}: block ${blk} runs into the end footer`);
      }
      throw new ImageError('VHD_BAT_OUT_OF_RANGE', `${where}: BAT entry ${blk} points inside ${what}`);
    }
  }
  let end = 0;
  for (let j = 0; j < count; j++) {
    if (j > 0 && starts[j]! < starts[j - 1]! + span) {
      throw new ImageError('VHD_BAT_OVERLAP', `${where}: blocks ${blockAt(starts[j - 1]!)} and ${blockAt(starts[j]!)} overlap`);
    }
    end = starts[j]! + span;
  }
  let metaEnd = 0;
  for (const [, b, what] of regions) if (what !== 'the end footer') metaEnd = Math.max(metaEnd, b);
  return Math.max(end, Math.ceil(metaEnd / 512) * 512);
}

async function openParent(
  childPath: string,
  header: DynamicHeader,
  locators: Array<{ code: number; bytes: Uint8Array }>,
  ctx: VhdOpenContext,
): Promise<ImageBase> {
  if (ctx.depth + 1 > MAX_CHAIN_DEPTH) {
    throw new ImageError('VHD_PARENT_LOOP', `${childPath}: differencing chain deeper than ${MAX_CHAIN_DEPTH}`);
  }
  // Relative locators first, then absolute, then the URL form, then the bare parent name.
  const rank = (c: number) =>
    c === PlatformCode.W2ru || c === PlatformCode.Wi2r ? 0 : c === PlatformCode.W2ku || c === PlatformCode.Wi2k ? 1 : 2;
  const candidates: string[] = [];
  for (const l of [...locators].sort((a, b) => rank(a.code) - rank(b.code))) {
    const p = decodeLocatorPath(l.code, l.bytes, childPath);
    if (p && !candidates.includes(p)) candidates.push(p);
  }
  if (header.parentUnicodeName) {
    const p = path.resolve(path.dirname(path.resolve(childPath)), header.parentUnicodeName.replace(/\\/g, '/'));
    if (!candidates.includes(p)) candidates.push(p);
  }
  // The child's directory, and the directories the caller allowed, as named and as real paths: a candidate
  // outside all of them is not even looked at (its existence is nobody's business), and one that is inside
  // by name must be inside by real path too (a symlink out of the directory does not count).
  const childDir = path.dirname(path.resolve(childPath));
  const realRoots = [await realpath(childDir), ...ctx.parents.dirs];
  const namedRoots = [childDir, ...ctx.parents.namedDirs, ...realRoots];
  const allowedByName = (p: string) => ctx.parents.anywhere || namedRoots.some((r) => isInside(r, p));
  const allowedByRealPath = (p: string) => ctx.parents.anywhere || realRoots.some((r) => isInside(r, p));
  let refused = 0;
  const tried: string[] = [];
  const mismatches: string[] = [];
  for (const candidate of candidates) {
    if (!allowedByName(candidate)) {
      refused++;
      continue;
    }
    let real: string;
    try {
      if (!(await stat(candidate)).isFile()) continue;
      real = await realpath(candidate);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') {
        tried.push(candidate);
        continue;
      }
      throw e;
    }
    if (!allowedByRealPath(real)) {
      refused++;
      continue;
    }
    if (ctx.seen.has(real)) {
      throw new ImageError('VHD_PARENT_LOOP', `${childPath}: parent ${candidate} is already in the chain (loop)`);
    }
    const fh = await open(real, 'r');
    let parent: ImageBase;
    try {
      const size = (await fh.stat()).size;
      if (!(await looksLikeVhd(fh, size))) {
        await fh.close();
        mismatches.push(`${candidate} is not a VHD`);
        continue;
      }
      parent = await openVhd(fh, candidate, false, { seen: new Set([...ctx.seen, real]), depth: ctx.depth + 1, parents: ctx.parents });
    } catch (e) {
      await fh.close(); // the open error is the one worth reporting; a close error would replace it
      throw e;
    }
    if (parent.uuid !== header.parentUniqueId) {
      await parent.close();
      // No UUIDs in the message: they are what it takes to forge a child that matches a file.
      mismatches.push(`${candidate} is not the disk this child was made from (its UUID differs)`);
      continue;
    }
    return parent;
  }
  if (mismatches.length > 0) throw new ImageError('VHD_PARENT_MISMATCH', `${childPath}: no matching parent: ${mismatches.join('; ')}`);
  if (refused > 0) {
    // Neither the refused paths nor anything about the files there: only the directories the user named.
    throw new ImageError(
      'VHD_PARENT_NOT_ALLOWED',
      `${childPath}: its parent locator leads outside ${childDir} (an absolute or ../ path)` +
        (ctx.parents.dirs.length > 0 ? ` and the --parent-dir directories` : '') +
        '; to follow it, pass --parent-dir with the parent\'s directory, or --allow-absolute-parents for an image you trust' +
        (tried.length > 0 ? ` (also tried ${tried.join(', ')})` : ''),
    );
  }
  throw new ImageError('VHD_PARENT_MISSING', `${childPath}: parent not found (tried ${tried.length ? tried.join(', ') : 'no usable locator'})`);
}
