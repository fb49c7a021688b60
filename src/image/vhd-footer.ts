/**
 * The 512-byte VHD footer (spec "Hard Disk Footer Format"): one field table for
 * reading and writing. Fixed disks keep it at the end of the file; dynamic and
 * differencing disks keep an identical copy at offset 0.
 */
import { ImageError } from './errors.js';
import { decodeStruct, encodeStruct, type Decoded, type FieldSpec } from './struct-layout.js';
import { vhdChecksum } from './vhd-checksum.js';

export const VHD_FOOTER_SIZE = 512;
export const VHD_FOOTER_COOKIE = 'conectix';
/** Features field: bit 1 "reserved" must always be set. */
export const VHD_FEATURES_RESERVED = 0x00000002;
export const VHD_FORMAT_VERSION = 0x00010000;
/** Data offset of a fixed disk (no further structure). */
export const VHD_NO_DATA_OFFSET = 0xffffffffffffffffn;

export const VhdDiskType = { fixed: 2, dynamic: 3, differencing: 4 } as const;

export const FOOTER_FIELDS = [
  { name: 'cookie', offset: 0, size: 8, kind: 'ascii' },
  { name: 'features', offset: 8, size: 4, kind: 'u32' },
  { name: 'formatVersion', offset: 12, size: 4, kind: 'u32' },
  { name: 'dataOffset', offset: 16, size: 8, kind: 'u64' },
  { name: 'timestamp', offset: 24, size: 4, kind: 'u32' },
  { name: 'creatorApplication', offset: 28, size: 4, kind: 'ascii' },
  { name: 'creatorVersion', offset: 32, size: 4, kind: 'u32' },
  { name: 'creatorHostOs', offset: 36, size: 4, kind: 'ascii' },
  { name: 'originalSize', offset: 40, size: 8, kind: 'u64' },
  { name: 'currentSize', offset: 48, size: 8, kind: 'u64' },
  { name: 'cylinders', offset: 56, size: 2, kind: 'u16' },
  { name: 'heads', offset: 58, size: 1, kind: 'u8' },
  { name: 'sectorsPerTrack', offset: 59, size: 1, kind: 'u8' },
  { name: 'diskType', offset: 60, size: 4, kind: 'u32' },
  { name: 'checksum', offset: 64, size: 4, kind: 'u32' },
  { name: 'uniqueId', offset: 68, size: 16, kind: 'uuid' },
  { name: 'savedState', offset: 84, size: 1, kind: 'u8' },
  { name: 'reserved', offset: 85, size: 427, kind: 'reserved' },
] as const satisfies readonly FieldSpec[];

export const FOOTER_CHECKSUM_OFFSET = 64;

/** A parsed VHD footer. */
export type VhdFooter = Decoded<typeof FOOTER_FIELDS>;

/** Footer checks a reader may relax (the caller decides what to do with a bad checksum). */
export interface ReadFooterOptions {
  readonly verifyChecksum?: boolean;
}

/**
 * Parse and validate a footer: cookie, checksum, format version, disk type and
 * a whole number of sectors. Throws ImageError naming the first problem.
 */
export function readVhdFooter(bytes: Uint8Array, opts: ReadFooterOptions = {}): VhdFooter {
  if (bytes.length < VHD_FOOTER_SIZE) throw new ImageError('VHD_TRUNCATED', `VHD footer: need 512 bytes, got ${bytes.length}`);
  const b = bytes.subarray(0, VHD_FOOTER_SIZE);
  const f = decodeStruct(FOOTER_FIELDS, b);
  if (f.cookie !== VHD_FOOTER_COOKIE) throw new ImageError('VHD_BAD_COOKIE', `VHD footer: cookie is not "conectix"`);
  if (opts.verifyChecksum !== false) {
    const want = vhdChecksum(b, FOOTER_CHECKSUM_OFFSET);
    if (want !== f.checksum) {
      throw new ImageError('VHD_BAD_CHECKSUM', `VHD footer: checksum 0x${f.checksum.toString(16)} does not match computed 0x${want.toString(16)}`);
    }
  }
  if (f.formatVersion >>> 16 !== 1) {
    throw new ImageError('VHD_UNSUPPORTED_VERSION', `VHD footer: format version 0x${f.formatVersion.toString(16)} is not 1.x`);
  }
  if (f.diskType !== VhdDiskType.fixed && f.diskType !== VhdDiskType.dynamic && f.diskType !== VhdDiskType.differencing) {
    throw new ImageError('VHD_UNKNOWN_DISK_TYPE', `VHD footer: disk type ${f.diskType} is not fixed (2), dynamic (3) or differencing (4)`);
  }
  if (f.currentSize % 512n !== 0n) {
    throw new ImageError('IMAGE_BAD_SIZE', `VHD footer: current size ${f.currentSize} is not a whole number of 512-byte sectors`);
  }
  return f;
}

/** Encode a footer; the checksum field is computed, whatever `footer.checksum` says. */
export function encodeVhdFooter(footer: VhdFooter): Uint8Array {
  const out = new Uint8Array(VHD_FOOTER_SIZE);
  encodeStruct(FOOTER_FIELDS, { ...footer, checksum: 0 }, out);
  new DataView(out.buffer).setUint32(FOOTER_CHECKSUM_OFFSET, vhdChecksum(out, FOOTER_CHECKSUM_OFFSET), false);
  return out;
}
