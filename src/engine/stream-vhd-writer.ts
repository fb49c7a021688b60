/**
 * The layout of an outgoing VHD stream, encoded with the image part's layout
 * writers. Dynamic (spec "Dynamic Hard Disk Image"): footer copy at 0, header
 * at 512, BAT at 1536, then whole blocks (sector bitmap + data) in the order
 * the stream will emit them, then the footer; the BAT is known up front
 * because the emission order is. Fixed: data, then the footer.
 */
import { encodeDynamicHeader, encodeVhdFooter, newVhdFooter, sectorBitmapSize, BAT_UNALLOCATED, VhdDiskType, MAX_VIRTUAL_SIZE, type DynamicHeader } from '../image/index.js';
import { VHD_NO_DATA_OFFSET } from '../image/vhd-footer.js';
import { EngineError } from './errors.js';

const BAT_OFFSET = 1536;
const align512 = (n: number) => Math.ceil(n / 512) * 512;

export interface DynamicOutput {
  /** Footer copy, dynamic header and BAT: the first bytes of the stream. */
  readonly prefix: Uint8Array;
  readonly footer: Uint8Array;
  /** A full sector bitmap (every sector present), emitted before each block's data. */
  readonly bitmap: Uint8Array;
  readonly blockSize: number;
  readonly entries: number;
}

function checkSize(size: bigint): void {
  if (size <= 0n || size % 512n !== 0n || size > MAX_VIRTUAL_SIZE) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `output virtual size ${size} is not a whole number of sectors up to the 2 TiB VHD limit`);
  }
}

/**
 * A dynamic disk of `size` bytes whose allocated blocks are `order` (block
 * indices, in emission order). `template` is the input's dynamic header (its
 * cookie, version and reserved fields are kept; table fields are ours).
 */
export function planDynamicOutput(p: { size: bigint; blockSize: number; uuid: string; order: ArrayLike<number>; template: DynamicHeader }): DynamicOutput {
  checkSize(p.size);
  const bs = p.blockSize;
  const entries = Number((p.size + BigInt(bs) - 1n) / BigInt(bs));
  const batBytes = align512(entries * 4);
  const first = BAT_OFFSET + batBytes;
  const bitmapSize = sectorBitmapSize(bs);
  const span = bitmapSize + bs;
  const bat = new Uint8Array(batBytes).fill(0xff);
  const dv = new DataView(bat.buffer);
  for (let k = 0; k < p.order.length; k++) {
    const idx = p.order[k]!;
    if (!(idx >= 0 && idx < entries)) throw new EngineError('ENGINE_BAD_ARGUMENT', `output block ${idx} outside the ${entries}-block disk`);
    if (dv.getUint32(idx * 4, false) !== BAT_UNALLOCATED) throw new EngineError('ENGINE_BAD_ARGUMENT', `output block ${idx} placed twice`);
    // Sector offsets are 32-bit (spec "Block Allocation Table"); a 2 TiB disk's file stays below 2^41 bytes.
    const sector = (first + k * span) / 512;
    if (sector >= BAT_UNALLOCATED) throw new EngineError('ENGINE_BAD_ARGUMENT', 'output file too large for 32-bit BAT entries');
    dv.setUint32(idx * 4, sector, false);
  }
  const footer = encodeVhdFooter(newVhdFooter(p.size, VhdDiskType.dynamic, p.uuid, 512n));
  const header = encodeDynamicHeader({ ...p.template, tableOffset: BigInt(BAT_OFFSET), maxTableEntries: entries, blockSize: bs });
  const prefix = new Uint8Array(first);
  prefix.set(footer, 0);
  prefix.set(header, 512);
  prefix.set(bat, BAT_OFFSET);
  return { prefix, footer, bitmap: new Uint8Array(bitmapSize).fill(0xff), blockSize: bs, entries };
}

/** A fixed disk's footer for `size` bytes of data. */
export function fixedFooter(size: bigint, uuid: string): Uint8Array {
  checkSize(size);
  return encodeVhdFooter(newVhdFooter(size, VhdDiskType.fixed, uuid, VHD_NO_DATA_OFFSET));
}
