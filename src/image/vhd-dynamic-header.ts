/**
 * The 1024-byte dynamic disk header 'cxsparse' (spec "Dynamic Disk Header
 * Format") and its eight 24-byte parent locator entries: one field table each,
 * shared by reader and writer.
 */
import { ImageError } from './errors.js';
import { decodeStruct, encodeStruct, type Decoded, type FieldSpec } from './struct-layout.js';
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

export const DYNAMIC_HEADER_FIELDS = [
  { name: 'cookie', offset: 0, size: 8, kind: 'ascii' },
  { name: 'dataOffset', offset: 8, size: 8, kind: 'u64' },
  { name: 'tableOffset', offset: 16, size: 8, kind: 'u64' },
  { name: 'headerVersion', offset: 24, size: 4, kind: 'u32' },
  { name: 'maxTableEntries', offset: 28, size: 4, kind: 'u32' },
  { name: 'blockSize', offset: 32, size: 4, kind: 'u32' },
  { name: 'checksum', offset: 36, size: 4, kind: 'u32' },
  { name: 'parentUniqueId', offset: 40, size: 16, kind: 'uuid' },
  { name: 'parentTimestamp', offset: 56, size: 4, kind: 'u32' },
  { name: 'reserved1', offset: 60, size: 4, kind: 'reserved' },
  { name: 'parentUnicodeName', offset: 64, size: 512, kind: 'utf16be' },
  // 576..767: eight PARENT_LOCATOR_FIELDS entries, decoded separately.
  { name: 'reserved2', offset: 768, size: 256, kind: 'reserved' },
] as const satisfies readonly FieldSpec[];

export const PARENT_LOCATOR_FIELDS = [
  { name: 'platformCode', offset: 0, size: 4, kind: 'u32' },
  /** Spec: sectors needed for the locator; some writers store bytes. Readers use dataLength. */
  { name: 'platformDataSpace', offset: 4, size: 4, kind: 'u32' },
  { name: 'platformDataLength', offset: 8, size: 4, kind: 'u32' },
  { name: 'reserved', offset: 12, size: 4, kind: 'reserved' },
  { name: 'platformDataOffset', offset: 16, size: 8, kind: 'u64' },
] as const satisfies readonly FieldSpec[];

export type ParentLocator = Decoded<typeof PARENT_LOCATOR_FIELDS>;

/** A parsed dynamic disk header with its eight parent locators. */
export type DynamicHeader = Decoded<typeof DYNAMIC_HEADER_FIELDS> & {
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
  const h = decodeStruct(DYNAMIC_HEADER_FIELDS, b);
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
    parentLocators.push(Object.freeze(decodeStruct(PARENT_LOCATOR_FIELDS, b.subarray(o, o + PARENT_LOCATOR_SIZE))));
  }
  return Object.freeze({ ...h, parentLocators: Object.freeze(parentLocators) });
}

/** Encode a dynamic header with its locators; the checksum is computed. */
export function encodeDynamicHeader(header: DynamicHeader): Uint8Array {
  const out = new Uint8Array(DYNAMIC_HEADER_SIZE);
  encodeStruct(DYNAMIC_HEADER_FIELDS, { ...header, checksum: 0 }, out);
  for (let i = 0; i < PARENT_LOCATOR_COUNT; i++) {
    const o = PARENT_LOCATOR_OFFSET + i * PARENT_LOCATOR_SIZE;
    encodeStruct(PARENT_LOCATOR_FIELDS, header.parentLocators[i] ?? EMPTY_LOCATOR, out.subarray(o, o + PARENT_LOCATOR_SIZE));
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
