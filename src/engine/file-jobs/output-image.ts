/** The output container: which one follows an input, how much space it needs, reopening it to resume. */
import { openImage, type DiskImage, type ImageFormat, type WritableImage } from '../../image/index.js';
import type { OutputFormat } from '../run-options.js';

/** Fixed stays fixed, dynamic stays dynamic, raw stays raw; a differencing chain is flattened into a dynamic disk. */
export function containerFor(input: ImageFormat): OutputFormat {
  switch (input) {
    case 'raw':
      return 'raw';
    case 'vhd-fixed':
      return 'vhd-fixed';
    default:
      return 'vhd-dynamic';
  }
}

/** Reopen a temp output for writing (resume). */
export function openOutput(path: string, container: OutputFormat): Promise<WritableImage> {
  return openImage(path, { writable: true, format: container === 'raw' ? 'raw' : 'vhd' });
}

/**
 * Bytes the output will take on disk at most: flat containers their whole
 * size; a dynamic one its header blocks plus the allocated data it will hold,
 * each block with a sector bitmap, plus BAT and footers.
 */
export async function estimateOutputBytes(
  input: DiskImage,
  container: OutputFormat,
  diskSize: bigint,
  headerBytes: bigint,
  blockSize: number,
  everyBlock: boolean,
): Promise<bigint> {
  if (container !== 'vhd-dynamic') return diskSize + 512n;
  const bs = BigInt(blockSize);
  let data = 0n;
  if (everyBlock) data = input.virtualSize;
  else for await (const e of input.extents()) if (e.allocated) data += e.length;
  const blocks = (headerBytes + data + bs - 1n) / bs + 1n;
  const bitmap = ((bs / 512n / 8n + 511n) / 512n) * 512n;
  const bat = (((diskSize + bs - 1n) / bs) * 4n + 511n) / 512n * 512n;
  return blocks * (bs + bitmap) + bat + 2048n;
}
