/**
 * What the volume layer reads a volume from: an open image (the file jobs, `serve`, `key export`), or the first
 * bytes of a virtual disk held in memory (a decrypt stream has only its header area buffered). Both go through
 * the same unlock, so a stream and a file open a volume by the same rules.
 */
import type { DiskImage } from '../image/index.js';

export interface VolumeSource {
  /** Names the volume in messages: the image's path, or 'input stream'. */
  readonly name: string;
  /** Where the LUKS header is read: the image itself, or the bytes from offset 0 of its virtual disk. */
  readonly header: DiskImage | Uint8Array;
  /**
   * The virtual disk's size in bytes, or null when it is not known yet (a raw or fixed VHD stream given no size):
   * the layout's payloadSize is then a one-sector placeholder and the reader takes the payload to the stream's end.
   */
  readonly size: bigint | null;
  /** The container's UUID (a VHD's), by which the vault finds a plain volume's secret; null when it has none. */
  readonly uuid: string | null;
}

/** An open image as a volume source. */
export function imageSource(image: DiskImage): VolumeSource {
  return { name: image.path, header: image, size: image.virtualSize, uuid: image.uuid ?? null };
}
