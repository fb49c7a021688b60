/**
 * What the NBD backings need from a disk image (a structural subset of the
 * image layer's DiskImage / WritableImage), and the allocation bookkeeping
 * both the plaintext and the encrypted backing share.
 */
import { ExtentMap } from './extent-map.js';

/** The image-layer surface the backings use. */
export interface ContainerImage {
  readonly format: string;
  readonly virtualSize: bigint;
  /** Allocation unit of a dynamic/differencing VHD. */
  readonly blockSize?: number;
  extents(): AsyncIterable<{ offset: bigint; length: bigint; allocated: boolean }>;
  read(offset: bigint, into: Uint8Array): Promise<void>;
  /** Where a range lies contiguously in the container file (see the image layer's DiskImage.fileSpan), or null. */
  fileSpan?(offset: bigint, length: number): number | null;
  write?(offset: bigint, data: Uint8Array): Promise<void>;
  flush?(): Promise<void>;
  /** Deallocate whole allocation units inside the range; the rest must read back as zeros too. */
  discard?(offset: bigint, length: bigint): Promise<void>;
  close(): Promise<void>;
}

/** Raw files: holes come in file-system blocks; 64 KiB covers every common block size. */
export const RAW_GRANULE = 64 * 1024;

/** The unit in which the container allocates: a VHD block, or RAW_GRANULE for files whose holes the FS tracks. */
export function allocationGranule(image: ContainerImage): number {
  return image.blockSize !== undefined && image.blockSize > 0 ? image.blockSize : RAW_GRANULE;
}

/** Build the allocation map of a container from its extents(). */
export function mapContainer(image: ContainerImage): Promise<ExtentMap> {
  return ExtentMap.fromExtents(image.virtualSize, image.extents());
}

/** [start, end) widened outward to whole granules (clamped to `size`). */
export function widenToGranules(start: bigint, end: bigint, granule: number, size: bigint): [bigint, bigint] {
  const g = BigInt(granule);
  const s = (start / g) * g;
  let e = ((end + g - 1n) / g) * g;
  if (e > size) e = size;
  return [s, e];
}

/** [start, end) narrowed inward to whole granules (a last, short granule ending at `size` counts); empty when s >= e. */
export function narrowToGranules(start: bigint, end: bigint, granule: number, size: bigint): [bigint, bigint] {
  const g = BigInt(granule);
  return [((start + g - 1n) / g) * g, end === size ? end : (end / g) * g];
}

/** A zero-filled buffer shared for writing zeros; never written to. */
export const ZERO_CHUNK = new Uint8Array(1024 * 1024);
