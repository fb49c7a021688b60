/**
 * The 1024-byte dynamic disk header 'cxsparse' (spec "Dynamic Disk Header
 * Format") and its eight 24-byte parent locator entries: one field table each,
 * shared by reader and writer.
 */
import { ImageError } from './errors.js';
import { ascii, defineStruct, reserved, skip, u32be, u64be, utf16be, uuid, type LayoutValue } from '../binary/index.js';
import { vhdChecksum } from './vhd-checksum.js';

export const DYNAMIC_HEADER_SIZE = 1024;
export const DYNAMIC_HEADER_COOKIE = 'cxsparse';
export const DYNAMIC_HEADER_VERSION = 0x00010000;
export const DYNAMIC_HEADER_CHECKSUM_OFFSET = 36;
export const PARENT_LOCATOR_OFFSET = 576;
export const PARENT_LOCATOR_SIZE = 24;
export const PARENT_LOCATOR_COUNT = 8;
/** BAT entry of a block that is not allocated. */
export const BAT_UNALLOCATED = 0xffffffff;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** Block sizes we accept: powers of two from one sector to 256 MiB (bitmap at most 64 KiB). */
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;

/** Platform codes of parent locators (spec "Parent Locator Entry"). */
export const PlatformCode = {
  none: 0,
  /** UTF-16LE path relative to the child (Windows). */
  W2ru: 0x57327275,
  /** UTF-16LE absolute path (Windows). */
  W2ku: 0x57326b75,
  /** Deprecated Windows codes. */
  Wi2r: 0x57693272,
  Wi2k: 0x5769326b,
  /** Mac OS alias blob. */
  Mac: 0x4d616320,
  /** UTF-8 file URL (RFC 2396). */
  MacX: 0x4d616358,
} as const;

export const PARENT_LOCATOR_LAYOUT = defineStruct(
  'VHD parent locator entry',
  [
    ['platformCode', u32be, 0],
    /** Spec: sectors needed for the locator; some writers store bytes. Readers use dataLength. */
    ['platformDataSpace', u32be, 4],
    ['platformDataLength', u32be, 8],
    ['reserved', reserved(4), 12],
    ['platformDataOffset', u64be, 16],
  ],
  { size: PARENT_LOCATOR_SIZE },
);

/** Offsets as the spec's table states them; defineStruct refuses the table if a size puts a field elsewhere. */
export const DYNAMIC_HEADER_LAYOUT = defineStruct(
  'VHD dynamic disk header',
  [
    ['cookie', ascii(8), 0],
    ['dataOffset', u64be, 8],
    ['tableOffset', u64be, 16],
    ['headerVersion', u32be, 24],
    ['maxTableEntries', u32be, 28],
    ['blockSize', u32be, 32],
    ['checksum', u32be, DYNAMIC_HEADER_CHECKSUM_OFFSET],
    ['parentUniqueId', uuid, 40],
    ['parentTimestamp', u32be, 56],
    ['reserved1', reserved(4), 60],
    ['parentUnicodeName', utf16be(512), 64],
    // Eight PARENT_LOCATOR_LAYOUT entries, decoded and encoded one by one.
    ['parentLocatorEntries', skip(PARENT_LOCATOR_COUNT * PARENT_LOCATOR_SIZE), PARENT_LOCATOR_OFFSET],
    ['reserved2', reserved(256), 768],
  ],
  { size: DYNAMIC_HEADER_SIZE },
);

export type ParentLocator = LayoutValue<typeof PARENT_LOCATOR_LAYOUT>;

/** A parsed dynamic disk header with its eight parent locators. */
export type DynamicHeader = LayoutValue<typeof DYNAMIC_HEADER_LAYOUT> & {
  readonly parentLocators: readonly ParentLocator[];
};

export const EMPTY_LOCATOR: ParentLocator = {
  platformCode: 0,
  platformDataSpace: 0,
  platformDataLength: 0,
  platformDataOffset: 0n,
};

/** Bytes of a block's sector bitmap: one bit per sector, padded to whole sectors. */
export function sectorBitmapSize(blockSize: number): number {
  return Math.ceil(blockSize / 512 / 8 / 512) * 512;
}

/**
 * Parse and validate a dynamic header: cookie, checksum, version and block
 * size. Table bounds are checked by the image opener, which knows the file.
 */
export function readDynamicHeader(bytes: Uint8Array): DynamicHeader {
  if (bytes.length < DYNAMIC_HEADER_SIZE) {
    throw new ImageError('VHD_TRUNCATED', `dynamic disk header: need 1024 bytes, got ${bytes.length}`);
  }
  const b = bytes.subarray(0, DYNAMIC_HEADER_SIZE);
  const h = DYNAMIC_HEADER_LAYOUT.decode(b);
  if (h.cookie !== DYNAMIC_HEADER_COOKIE) {
    throw new ImageError('VHD_BAD_DYNAMIC_HEADER', 'dynamic disk header: cookie is not "cxsparse"');
  }
  const want = vhdChecksum(b, DYNAMIC_HEADER_CHECKSUM_OFFSET);
  if (want !== h.checksum) {
    throw new ImageError('VHD_BAD_CHECKSUM', `dynamic disk header: checksum 0x${h.checksum.toString(16)} does not match computed 0x${want.toString(16)}`);
  }
  if (h.headerVersion >>> 16 !== 1) {
    throw new ImageError('VHD_UNSUPPORTED_VERSION', `dynamic disk header: version 0x${h.headerVersion.toString(16)} is not 1.x`);
  }
  const bs = h.blockSize;
  if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
    throw new ImageError('VHD_BAD_BLOCK_SIZE', `dynamic disk header: block size ${bs} is not a power of two between 512 B and 256 MiB`);
  }
  const parentLocators: ParentLocator[] = [];
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const o = PARENT_LOCATOR_OFFSET + i * PARENT_LOCATOR_SIZE;
    parentLocators.push(Object.freeze(PARENT_LOCATOR_LAYOUT.decode(b, o)));
  }
  return Object.freeze({ ...h, parentLocators: Object.freeze(parentLocators) });
}

/** Encode a dynamic header with its locators; the checksum is computed. */
export function encodeDynamicHeader(header: DynamicHeader): Uint8Array {
  const out = new Uint8Array(DYNAMIC_HEADER_SIZE);
  DYNAMIC_HEADER_LAYOUT.encode({ ...header, checksum: 0 }, out);
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const o = PARENT_LOCATOR_OFFSET + i * PARENT_LOCATOR_SIZE;
    PARENT_LOCATOR_LAYOUT.encode(header.parentLocators[i] ?? EMPTY_LOCATOR, out, o);
  }
  new DataView(out.buffer).setUint32(DYNAMIC_HEADER_CHECKSUM_OFFSET, vhdChecksum(out, DYNAMIC_HEADER_CHECKSUM_OFFSET), false);
  return out;
}

/** Decode `entries` big-endian BAT entries (sector offsets, BAT_UNALLOCATED for none). */
export function readBat(bytes: Uint8Array, entries: number): Uint32Array {
  if (!Number.isSafeInteger(entries) || entries < 0) throw new ImageError('IMAGE_BAD_ARGUMENT', `BAT: entry count ${String(entries)} is not a whole number`);
  if (bytes.length < entries * 4) throw new ImageError('VHD_TRUNCATED', `BAT: need ${entries * 4} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = dv.getUint32(i * 4, false);
  return bat;
}
