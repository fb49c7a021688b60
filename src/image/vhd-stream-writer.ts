/**
 * The layout of an outgoing VHD stream, encoded with the layout writers and
 * placed by the layout declarations the file writer uses (vhd-layout.ts).
 * Dynamic (spec "Dynamic Hard Disk Image"): footer copy, dynamic header and
 * BAT where createImage puts them, then whole blocks (sector bitmap + data)
 * in the order the stream will emit them, then the footer; the BAT is known
 * up front because the emission order is. Fixed: data, then the footer.
 */
import { checkVirtualSize, newVhdFooter } from './create-image.js';
import { ImageError } from './errors.js';
import { BAT_UNALLOCATED, encodeDynamicHeader, sectorBitmapSize, type DynamicHeader } from './vhd-dynamic-header.js';
import { VHD_NO_DATA_OFFSET, VhdDiskType, encodeVhdFooter } from './vhd-footer.js';
import { BAT_ENTRY_SIZE, BAT_OFFSET, DYNAMIC_HEADER_OFFSET, FOOTER_COPY_OFFSET, VHD_SECTOR_SIZE, batEntries, batSpan } from './vhd-layout.js';

export interface DynamicOutput {
  /** Footer copy, dynamic header and BAT: the first bytes of the stream. */
  readonly prefix: Uint8Array;
  readonly footer: Uint8Array;
  /** A full sector bitmap (every sector present), emitted before each block's data. */
  readonly bitmap: Uint8Array;
  readonly blockSize: number;
  readonly entries: number;
}

/**
 * A dynamic disk of `size` bytes whose allocated blocks are `order` (block
 * indices, in emission order). `template` is the input's dynamic header (its
 * cookie, version and reserved fields are kept; table fields are ours).
 */
export function planDynamicOutput(p: { size: bigint; blockSize: number; uuid: string; order: ArrayLike<number>; template: DynamicHeader }): DynamicOutput {
  checkVirtualSize(p.size);
  const bs = p.blockSize;
  const entries = batEntries(p.size, bs);
  const batBytes = batSpan(entries);
  const first = BAT_OFFSET + batBytes;
  const bitmapSize = sectorBitmapSize(bs);
  const span = bitmapSize + bs;
  const bat = new Uint8Array(batBytes).fill(0xff);
  const dv = new DataView(bat.buffer);
  for (let k = 0; k < p.order.length; k++) {
    const idx = p.order[k]!;
    if (!(idx >= 0 && idx < entries)) throw new ImageError('IMAGE_BAD_ARGUMENT', `output block ${idx} outside the ${entries}-block disk`);
    if (dv.getUint32(idx * BAT_ENTRY_SIZE, false) !== BAT_UNALLOCATED) throw new ImageError('IMAGE_BAD_ARGUMENT', `output block ${idx} placed twice`);
    // Sector offsets are 32-bit (spec "Block Allocation Table"); a 2 TiB disk's file stays below 2^41 bytes.
    const sector = (first + k * span) / VHD_SECTOR_SIZE;
    if (sector >= BAT_UNALLOCATED) throw new ImageError('VHD_UNSUPPORTED_SIZE', 'output file too large for 32-bit BAT entries');
    dv.setUint32(idx * BAT_ENTRY_SIZE, sector, false);
  }
  const footer = encodeVhdFooter(newVhdFooter(p.size, VhdDiskType.dynamic, p.uuid, BigInt(DYNAMIC_HEADER_OFFSET)));
  const header = encodeDynamicHeader({ ...p.template, tableOffset: BigInt(BAT_OFFSET), maxTableEntries: entries, blockSize: bs });
  const prefix = new Uint8Array(first);
  prefix.set(footer, FOOTER_COPY_OFFSET);
  prefix.set(header, DYNAMIC_HEADER_OFFSET);
  prefix.set(bat, BAT_OFFSET);
  return { prefix, footer, bitmap: new Uint8Array(bitmapSize).fill(0xff), blockSize: bs, entries };
}

/** A fixed disk's footer for `size` bytes of data. */
export function fixedFooter(size: bigint, uuid: string): Uint8Array {
  checkVirtualSize(size);
  return encodeVhdFooter(newVhdFooter(size, VhdDiskType.fixed, uuid, VHD_NO_DATA_OFFSET));
}
