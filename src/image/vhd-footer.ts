/**
 * The 512-byte VHD footer (spec "Hard Disk Footer Format"): one field table for
 * reading and writing. Fixed disks keep it at the end of the file; dynamic and
 * differencing disks keep an identical copy at offset 0.
 */
import { ImageError } from './errors.js';
import { ascii, defineStruct, reserved, u16be, u32be, u64be, u8, uuid, type LayoutValue } from '../binary/index.js';
import { vhdChecksum } from './vhd-checksum.js';

export const VHD_FOOTER_SIZE = 512;
export const VHD_FOOTER_COOKIE = 'conectix';
/** Features field: bit 1 "reserved" must always be set. */
export const VHD_FEATURES_RESERVED = 0x00000002;
export const VHD_FORMAT_VERSION = 0x00010000;
/** Data offset of a fixed disk (no further structure). */
export const VHD_NO_DATA_OFFSET = 0xffffffffffffffffn;

export const VhdDiskType = { fixed: 2, dynamic: 3, differencing: 4 } as const;

/** Offsets as the spec's table states them; defineStruct refuses the table if a size puts a field elsewhere. */
export const VHD_FOOTER_LAYOUT = defineStruct(
  'VHD footer',
  [
    ['cookie', ascii(8), 0],
    ['features', u32be, 8],
    ['formatVersion', u32be, 12],
    ['dataOffset', u64be, 16],
    ['timestamp', u32be, 24],
    ['creatorApplication', ascii(4), 28],
    ['creatorVersion', u32be, 32],
    ['creatorHostOs', ascii(4), 36],
    ['originalSize', u64be, 40],
    ['currentSize', u64be, 48],
    ['cylinders', u16be, 56],
    ['heads', u8, 58],
    ['sectorsPerTrack', u8, 59],
    ['diskType', u32be, 60],
    ['checksum', u32be, 64],
    ['uniqueId', uuid, 68],
    ['savedState', u8, 84],
    ['reserved', reserved(427), 85],
  ],
  { size: VHD_FOOTER_SIZE },
);

export const FOOTER_CHECKSUM_OFFSET = VHD_FOOTER_LAYOUT.offsetOf.checksum;

/** A parsed VHD footer. */
export type VhdFooter = LayoutValue<typeof VHD_FOOTER_LAYOUT>;

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
  const f = VHD_FOOTER_LAYOUT.decode(b);
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
  VHD_FOOTER_LAYOUT.encode({ ...footer, checksum: 0 }, out);
  new DataView(out.buffer).setUint32(FOOTER_CHECKSUM_OFFSET, vhdChecksum(out, FOOTER_CHECKSUM_OFFSET), false);
  return out;
}
