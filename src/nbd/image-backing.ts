/**
 * An NBD backing over a plaintext disk image (raw or VHD through the image
 * layer): the export is the image's virtual disk. Holes of the image are
 * reported by BLOCK_STATUS and sent as OFFSET_HOLE chunks.
 */
import type { BlockStatusExtent, BlockSizeConstraints, NbdBacking, ReadSegment } from './backing.js';
import {
  allocationGranule,
  mapContainer,
  narrowToGranules,
  widenToGranules,
  ZERO_CHUNK,
  type ContainerImage,
} from './container.js';
import { acquireBuffer } from './buffer-pool.js';
import { NbdRequestError } from './errors.js';
import type { ExtentMap } from './extent-map.js';
import { DEFAULT_MAX_PAYLOAD, NBD_EPERM, NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol.js';

export interface ImageBackingOptions {
  readonly readOnly?: boolean;
}

/** Serves a plaintext image as is. */
export class ImageBacking implements NbdBacking {
  readonly size: bigint;
  readonly blockSize: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: DEFAULT_MAX_PAYLOAD };
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canMultiConn = true;
  readonly description: string;
  private readonly granule: number;

  private constructor(
    private readonly image: ContainerImage,
    private readonly map: ExtentMap,
    opts: ImageBackingOptions,
  ) {
    this.size = image.virtualSize;
    this.readOnly = opts.readOnly === true || image.write === undefined;
    this.canFlush = !this.readOnly && image.flush !== undefined;
    this.canTrim = !this.readOnly && image.discard !== undefined;
    this.canZero = !this.readOnly;
    this.granule = allocationGranule(image);
    this.description = `vhdcrypt plaintext ${image.format} image`;
  }

  /** Wrap an open image; its allocation is read once here. */
  static async open(image: ContainerImage, opts: ImageBackingOptions = {}): Promise<ImageBacking> {
    return new ImageBacking(image, await mapContainer(image), opts);
  }

  async read(offset: bigint, length: number): Promise<Uint8Array> {
    const out = acquireBuffer(length);
    await this.image.read(offset, out);
    return out;
  }

  async readSparse(offset: bigint, length: number): Promise<ReadSegment[]> {
    const segs = this.map.segments(offset, offset + BigInt(length));
    return Promise.all(
      segs.map(async (s): Promise<ReadSegment> => {
        const len = Number(s.length);
        if (!s.allocated) return { length: len, data: null };
        const data = acquireBuffer(len);
        await this.image.read(s.offset, data);
        return { length: len, data };
      }),
    );
  }

  async write(offset: bigint, data: Uint8Array, fua: boolean): Promise<void> {
    const image = this.writable();
    await image.write!(offset, data);
    // The container allocates whole granules; saying "allocated" for a zero block it skipped is still truthful (flags 0 = unknown).
    const [s, e] = widenToGranules(offset, offset + BigInt(data.length), this.granule, this.size);
    this.map.markAllocated(s, e);
    if (fua) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.canFlush) await this.image.flush!();
  }

  async trim(offset: bigint, length: number): Promise<void> {
    const image = this.writable();
    if (image.discard === undefined) return; // TRIM is a hint (proto.md NBD_CMD_TRIM)
    const [s, e] = narrowToGranules(offset, offset + BigInt(length), this.granule, this.size);
    if (s >= e) return;
    await image.discard(s, e - s);
    this.map.markHole(s, e);
  }

  async zero(offset: bigint, length: number, mayTrim: boolean): Promise<void> {
    const image = this.writable();
    const end = offset + BigInt(length);
    let [s, e] = mayTrim && image.discard !== undefined ? narrowToGranules(offset, end, this.granule, this.size) : [end, end];
    if (s >= e) [s, e] = [end, end];
    if (s < e) {
      await image.discard!(s, e - s);
      this.map.markHole(s, e);
    }
    // Outside the discarded granules, write zeros wherever the image does not already read as zeros.
    for (const [a, b] of [[offset, s], [e, end]] as const) {
      for (const seg of this.map.segments(a, b)) {
        if (!seg.allocated && mayTrim) continue;
        await this.writeZeros(image, seg.offset, seg.offset + seg.length);
      }
    }
  }

  async blockStatus(offset: bigint, length: number): Promise<BlockStatusExtent[]> {
    return this.map
      .segments(offset, offset + BigInt(length), 65536)
      .map((s) => ({ length: Number(s.length), flags: s.allocated ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO }));
  }

  async close(): Promise<void> {
    await this.image.close();
  }

  private async writeZeros(image: ContainerImage, start: bigint, end: bigint): Promise<void> {
    for (let pos = start; pos < end; ) {
      const step = end - pos < BigInt(ZERO_CHUNK.length) ? Number(end - pos) : ZERO_CHUNK.length;
      await image.write!(pos, ZERO_CHUNK.subarray(0, step));
      pos += BigInt(step);
    }
    const [s, e] = widenToGranules(start, end, this.granule, this.size);
    this.map.markAllocated(s, e);
  }

  private writable(): ContainerImage {
    if (this.readOnly) throw new NbdRequestError(NBD_EPERM, 'the export is read-only');
    return this.image;
  }
}
