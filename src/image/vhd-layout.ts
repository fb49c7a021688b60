/**
 * Where a dynamic or differencing VHD we write keeps its structures (spec
 * "Dynamic Hard Disk Image"): the footer copy at 0, the dynamic header right
 * after it, the BAT right after the header, each padded to whole sectors,
 * then parent locator data and blocks. Declared once for the file writer
 * (create-image.ts) and the one-pass stream writer and reader.
 */
import { DYNAMIC_HEADER_SIZE } from './vhd-dynamic-header.js';
import { VHD_FOOTER_SIZE } from './vhd-footer.js';

/** The VHD sector: BAT entries and parent locator spaces count these (spec "Block Allocation Table"). */
export const VHD_SECTOR_SIZE = 512;
/** Bytes of one BAT entry: a big-endian 32-bit sector offset. */
export const BAT_ENTRY_SIZE = 4;

/** A dynamic disk's copy of its footer, at the start of the file. */
export const FOOTER_COPY_OFFSET = 0;
/** The dynamic header (the footer's data offset): after the footer copy, 512. */
export const DYNAMIC_HEADER_OFFSET = FOOTER_COPY_OFFSET + VHD_FOOTER_SIZE;
/** The BAT (the header's table offset): after the dynamic header, 1536. */
export const BAT_OFFSET = DYNAMIC_HEADER_OFFSET + DYNAMIC_HEADER_SIZE;

/** `n` bytes rounded up to whole VHD sectors. */
export function alignToSector(n: number): number {
  return Math.ceil(n / VHD_SECTOR_SIZE) * VHD_SECTOR_SIZE;
}

/** BAT entries of a `size`-byte disk of `blockSize`-byte blocks (the last block may be partly past the end). */
export function batEntries(size: bigint, blockSize: number): number {
  return Number((size + BigInt(blockSize) - 1n) / BigInt(blockSize));
}

/** Bytes the BAT of `entries` blocks takes in the file, padded to whole sectors. */
export function batSpan(entries: number): number {
  return alignToSector(entries * BAT_ENTRY_SIZE);
}

/** The file offset of what a BAT entry (a sector number) points at. */
export function sectorOffset(sector: number): bigint {
  return BigInt(sector) * BigInt(VHD_SECTOR_SIZE);
}
