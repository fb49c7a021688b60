/** createImage: new raw, fixed, dynamic or differencing images (never over an existing file). */
import { open, realpath, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { ImageError } from './errors.js';
import { writeAt } from './file-io.js';
import { FlatImage } from './flat-image.js';
import { MAX_CHS, chsGeometry, chsSectors, type ChsGeometry } from './chs-geometry.js';
import {
  DEFAULT_BLOCK_SIZE,
  DYNAMIC_HEADER_COOKIE,
  DYNAMIC_HEADER_VERSION,
  EMPTY_LOCATOR,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  PlatformCode,
  encodeDynamicHeader,
  type DynamicHeader,
  type ParentLocator,
} from './vhd-dynamic-header.js';
import {
  VHD_FEATURES_RESERVED,
  VHD_FOOTER_COOKIE,
  VHD_FORMAT_VERSION,
  VHD_NO_DATA_OFFSET,
  VhdDiskType,
  encodeVhdFooter,
  type VhdFooter,
} from './vhd-footer.js';
import { BAT_OFFSET, DYNAMIC_HEADER_OFFSET, FOOTER_COPY_OFFSET, VHD_SECTOR_SIZE, alignToSector, batEntries, batSpan } from './vhd-layout.js';
import { vhdTimestamp } from './vhd-time.js';
import { encodeAbsoluteLocator, encodeRelativeLocator } from './parent-locator.js';
import { openImage, type ParentSearchOptions } from './open-image.js';
import { uuidToBytes } from '../binary/index.js';
import type { ImageFormat, WritableImage } from './types.js';

export interface CreateImageOptions {
  readonly format: ImageFormat;
  /** Bytes, a whole number of sectors; differencing: defaults to (and must equal) the parent's. */
  readonly virtualSize?: bigint;
  /** Differencing only: the parent VHD. */
  readonly parent?: string;
  /** Dynamic/differencing block size, a power of two (default 2 MiB). */
  readonly blockSize?: number;
  readonly uuid?: string;
  /** Azure upload: a fixed VHD whose size is rounded up to a whole MiB. */
  readonly azure?: boolean;
  /** Permission bits of the new file (default 0o666; the umask applies). Plaintext outputs pass 0o600. */
  readonly mode?: number;
  /** Differencing: where the named parent's own chain may lead (as openImage). */
  readonly parentSearch?: ParentSearchOptions;
}

/** Our footer creator application and version. */
export const CREATOR_APPLICATION = 'vhdc';
export const CREATOR_VERSION = 0x00010000;
/** Largest disk we create: 2 TiB, the reach of 32-bit BAT sector offsets. */
export const MAX_VIRTUAL_SIZE = 2n ** 41n;
const MIB = 1n << 20n;

/**
 * Geometry for the footer. Spec geometry when it covers the size exactly;
 * otherwise the maximum geometry, as qemu's force_size writes it: qemu then
 * reads the disk by its current size instead of truncating to the CHS product
 * (it trusts current size only for a few creator applications or that mark).
 */
export function footerGeometry(size: bigint): ChsGeometry {
  const g = chsGeometry(size);
  return chsSectors(g) * 512n === size ? g : MAX_CHS;
}

/** A fresh footer as we write it (creator "vhdc", time stamp now); streaming writers can encode it with encodeVhdFooter. */
export function newVhdFooter(size: bigint, diskType: number, uuid: string, dataOffset: bigint): VhdFooter {
  const g = footerGeometry(size);
  return {
    cookie: VHD_FOOTER_COOKIE,
    features: VHD_FEATURES_RESERVED,
    formatVersion: VHD_FORMAT_VERSION,
    dataOffset,
    timestamp: vhdTimestamp(),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: 'Wi2k',
    originalSize: size,
    currentSize: size,
    cylinders: g.cylinders,
    heads: g.heads,
    sectorsPerTrack: g.sectorsPerTrack,
    diskType,
    checksum: 0,
    uniqueId: uuid,
    savedState: 0,
  };
}

/** A virtual size we can write as a VHD (or raw) disk: whole sectors, at most MAX_VIRTUAL_SIZE; returns it. */
export function checkVirtualSize(size: bigint | undefined): bigint {
  if (typeof size !== 'bigint' || size <= 0n || size % 512n !== 0n) {
    throw new ImageError('IMAGE_BAD_SIZE', `virtual size ${String(size)} must be a positive whole number of 512-byte sectors`);
  }
  if (size > MAX_VIRTUAL_SIZE) throw new ImageError('VHD_UNSUPPORTED_SIZE', `virtual size ${size} is over the 2 TiB VHD limit`);
  return size;
}

/** Run the first writes of a new file; if they fail, close and remove it so no half-made image is left. */
async function removeOnFailure(p: string, fh: FileHandle, write: () => Promise<void>): Promise<void> {
  try {
    await write();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(p, { force: true });
    throw e;
  }
}

async function createExclusive(p: string, mode: number | undefined): Promise<FileHandle> {
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o777)) {
    throw new ImageError('IMAGE_BAD_ARGUMENT', `mode expected permission bits 0..0o777, got ${String(mode)}`);
  }
  try {
    return await open(p, 'wx+', mode ?? 0o666);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new ImageError('IMAGE_DEST_EXISTS', `${p} already exists`);
    throw e;
  }
}

/** Create a new image and return it open for writing. */
export async function createImage(p: string, opts: CreateImageOptions): Promise<WritableImage> {
  const uuid = opts.uuid ?? randomUUID();
  if (!uuidToBytes(uuid)) throw new ImageError('IMAGE_BAD_ARGUMENT', `uuid ${uuid} is not 32 hex digits`);
  const format: ImageFormat = opts.azure ? 'vhd-fixed' : opts.format;
  if (opts.azure && opts.format !== 'vhd-fixed') {
    throw new ImageError('IMAGE_BAD_ARGUMENT', `azure: true makes a fixed VHD; format ${opts.format} conflicts`);
  }
  switch (format) {
    case 'raw': {
      const size = checkVirtualSize(opts.virtualSize);
      const fh = await createExclusive(p, opts.mode);
      await removeOnFailure(p, fh, () => fh.truncate(Number(size)));
      return new FlatImage(fh, { format: 'raw', path: p, virtualSize: size, writable: true }, true);
    }
    case 'vhd-fixed': {
      let size = checkVirtualSize(opts.virtualSize);
      if (opts.azure) size = ((size + MIB - 1n) / MIB) * MIB;
      const footer = newVhdFooter(size, VhdDiskType.fixed, uuid, VHD_NO_DATA_OFFSET);
      const fh = await createExclusive(p, opts.mode);
      await removeOnFailure(p, fh, async () => {
        await fh.truncate(Number(size));
        await writeAt(fh, encodeVhdFooter(footer), Number(size));
      });
      const geometry = { cylinders: footer.cylinders, heads: footer.heads, sectorsPerTrack: footer.sectorsPerTrack };
      return new FlatImage(fh, { format: 'vhd-fixed', path: p, virtualSize: size, writable: true, uuid, geometry, footer }, true);
    }
    case 'vhd-dynamic':
      return createSparse(p, checkVirtualSize(opts.virtualSize), opts.blockSize ?? DEFAULT_BLOCK_SIZE, uuid, null, opts.mode);
    case 'vhd-differencing': {
      if (!opts.parent) throw new ImageError('IMAGE_BAD_ARGUMENT', 'a differencing disk needs a parent');
      const parent = await openImage(opts.parent, { format: 'vhd', ...opts.parentSearch });
      let parentSize: bigint;
      let parentUuid: string;
      try {
        if (!parent.uuid) throw new ImageError('VHD_PARENT_MISMATCH', `${opts.parent} has no UUID`);
        parentSize = parent.virtualSize;
        parentUuid = parent.uuid;
      } finally {
        await parent.close();
      }
      const size = opts.virtualSize ?? parentSize;
      if (size !== parentSize) {
        throw new ImageError('IMAGE_BAD_SIZE', `a differencing disk has its parent's size ${parentSize}, not ${size}`);
      }
      const mtime = (await stat(opts.parent)).mtime;
      return createSparse(p, size, opts.blockSize ?? parent.blockSize ?? DEFAULT_BLOCK_SIZE, uuid, {
        path: opts.parent,
        uuid: parentUuid,
        timestamp: vhdTimestamp(mtime),
        ...(opts.parentSearch ? { search: opts.parentSearch } : {}),
      }, opts.mode);
    }
    default:
      throw new ImageError('IMAGE_BAD_ARGUMENT', `unknown image format ${String(format)}`);
  }
}

interface ParentInfo {
  readonly path: string;
  readonly uuid: string;
  readonly timestamp: number;
  readonly search?: ParentSearchOptions;
}

/**
 * Lay out a dynamic or differencing disk (spec "Dynamic Hard Disk Image", as
 * vhd-layout.ts places it): footer copy, header, BAT, parent locator data
 * after the BAT, then blocks, then the footer.
 */
async function createSparse(p: string, size: bigint, blockSize: number, uuid: string, parent: ParentInfo | null, mode?: number): Promise<WritableImage> {
  if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new ImageError('VHD_BAD_BLOCK_SIZE', `block size ${blockSize} is not a power of two between 512 B and 256 MiB`);
  }
  const entries = batEntries(size, blockSize);
  const batBytes = batSpan(entries);
  let pos = BAT_OFFSET + batBytes;
  const locators: ParentLocator[] = [];
  const payloads: Array<[number, Uint8Array]> = [];
  if (parent) {
    for (const [code, bytes] of [
      [PlatformCode.W2ru, encodeRelativeLocator(p, parent.path)],
      [PlatformCode.W2ku, encodeAbsoluteLocator(parent.path)],
    ] as const) {
      const space = alignToSector(bytes.length);
      // Platform data space counts 512-byte sectors (spec "Parent Locator Entry").
      locators.push({ platformCode: code, platformDataSpace: space / VHD_SECTOR_SIZE, platformDataLength: bytes.length, platformDataOffset: BigInt(pos) });
      payloads.push([pos, bytes]);
      pos += space;
    }
  }
  const footer = newVhdFooter(size, parent ? VhdDiskType.differencing : VhdDiskType.dynamic, uuid, BigInt(DYNAMIC_HEADER_OFFSET));
  const header: DynamicHeader = {
    cookie: DYNAMIC_HEADER_COOKIE,
    dataOffset: VHD_NO_DATA_OFFSET,
    tableOffset: BigInt(BAT_OFFSET),
    headerVersion: DYNAMIC_HEADER_VERSION,
    maxTableEntries: entries,
    blockSize,
    checksum: 0,
    parentUniqueId: parent ? parent.uuid : '00000000-0000-0000-0000-000000000000',
    parentTimestamp: parent ? parent.timestamp : 0,
    parentUnicodeName: parent ? path.basename(parent.path) : '',
    parentLocators: Array.from({ length: 8 }, (_, i) => locators[i] ?? EMPTY_LOCATOR),
  };
  const footerBytes = encodeVhdFooter(footer);
  const fh = await createExclusive(p, mode);
  let made = false;
  try {
    await writeAt(fh, footerBytes, FOOTER_COPY_OFFSET);
    await writeAt(fh, encodeDynamicHeader(header), DYNAMIC_HEADER_OFFSET);
    const chunk = new Uint8Array(Math.min(batBytes, 1 << 20)).fill(0xff);
    for (let o = 0; o < batBytes; o += chunk.length) {
      await writeAt(fh, chunk.subarray(0, Math.min(chunk.length, batBytes - o)), BAT_OFFSET + o);
    }
    for (const [at, bytes] of payloads) await writeAt(fh, bytes, at);
    await writeAt(fh, footerBytes, pos);
    await fh.datasync();
    made = true;
  } finally {
    await fh.close();
    // A half-made image (ENOSPC, EIO) must not stay behind under the name asked for.
    if (!made) await rm(p, { force: true });
  }
  // The caller named this parent, so its directory is one the new child's locator may lead into.
  return openImage(p, {
    writable: true,
    format: 'vhd',
    ...(parent
      ? {
          parentDirs: [path.dirname(path.resolve(parent.path)), path.dirname(await realpath(parent.path)), ...(parent.search?.parentDirs ?? [])],
          allowAbsoluteParents: parent.search?.allowAbsoluteParents === true,
        }
      : {}),
  });
}
