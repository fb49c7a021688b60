/**
 * An NBD backing that exports the plaintext of an encrypted payload (a LUKS
 * segment or a plain dm-crypt volume) inside a container image (raw, fixed or
 * dynamic VHD). Reads decrypt; writes encrypt, with read-modify-write for
 * partial crypto sectors. A hole in the container reads as plaintext zeros
 * (the engine leaves all-zero source blocks unallocated), so:
 *  - BLOCK_STATUS reports container holes as holes;
 *  - the first write into a hole first fills the rest of that allocation unit
 *    with encrypted zeros, or its other sectors would read back as the
 *    decryption of zero bytes (garbage) once the container allocated them;
 *  - TRIM / WRITE_ZEROES of whole allocation units deallocate them, in a
 *    dynamic VHD only: there a deallocated block stays a hole on disk (the
 *    BAT says so) and reads as zeros after a restart too. A raw or fixed-VHD
 *    container has no hole it can record (its discard writes zero bytes,
 *    whose decryption is garbage), and a differencing VHD's discard writes
 *    zero bytes so as not to expose its parent: those get encrypted zeros.
 * Overlapping writes are serialised per crypto sector (RangeLock), so two
 * partial writes to one sector cannot lose each other's bytes.
 */
import type { Xts } from '../crypto/index.js';
import type { PayloadLayout } from '../volume/index.js';
import type { BlockStatusExtent, BlockSizeConstraints, DirectReadPath, NbdBacking, ReadSegment } from './backing.js';
import {
  allocationGranule,
  mapContainer,
  narrowToGranules,
  widenToGranules,
  ZERO_CHUNK,
  type ContainerImage,
} from './container.js';
import { acquireBuffer, releaseBuffers } from './buffer-pool.js';
import type { DirectReadFile, DirectReadPlan } from './direct-replies.js';
import { NbdError, NbdRequestError } from './errors.js';
import type { ExtentMap } from './extent-map.js';
import { DEFAULT_MAX_PAYLOAD, NBD_EPERM, NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol.js';
import { RangeLock } from './range-lock.js';

/** The payload layout (src/volume) under the name the NBD part's public API has always given it. */
export type CryptoLayout = PayloadLayout;

export interface EncryptedBackingOptions {
  readonly readOnly?: boolean;
  /** The native read path over the container file (raw or fixed VHD only), used by the server per connection. */
  readonly directFile?: DirectReadFile;
}

interface SectorRun {
  readonly start: bigint; // payload bytes, sector-aligned
  readonly end: bigint;
  readonly allocated: boolean;
}

export class EncryptedBacking implements NbdBacking {
  readonly size: bigint;
  readonly blockSize: BlockSizeConstraints;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean;
  readonly canMultiConn = true;
  readonly description: string;
  private readonly ss: bigint;
  private readonly d: bigint;
  private readonly granule: number;
  /** True when a deallocated allocation unit persists as a hole that reads as plaintext zeros (see the header). */
  private readonly realHoles: boolean;
  private readonly lock = new RangeLock();
  readonly direct?: DirectReadPath;

  private constructor(
    private readonly image: ContainerImage,
    private readonly xts: Xts,
    private readonly layout: PayloadLayout,
    private readonly map: ExtentMap,
    opts: EncryptedBackingOptions,
  ) {
    const ss = layout.sectorSize;
    if (ss !== 512 && ss !== 4096) throw new NbdError('NBD_BAD_LAYOUT', `crypto sector size ${ss} is not 512 or 4096`);
    if (layout.dataOffset < 0n || layout.dataOffset % BigInt(ss) !== 0n) {
      throw new NbdError('NBD_BAD_LAYOUT', `payload offset ${layout.dataOffset} is not a whole number of ${ss}-byte sectors`);
    }
    if (layout.payloadSize < 0n || layout.payloadSize % BigInt(ss) !== 0n || layout.dataOffset + layout.payloadSize > image.virtualSize) {
      throw new NbdError('NBD_BAD_LAYOUT', `payload of ${layout.payloadSize} bytes at ${layout.dataOffset} does not fit the ${image.virtualSize}-byte image in whole sectors`);
    }
    this.size = layout.payloadSize;
    this.ss = BigInt(ss);
    this.d = layout.dataOffset;
    this.blockSize = { minimum: 1, preferred: Math.max(ss, 4096), maximum: DEFAULT_MAX_PAYLOAD };
    this.readOnly = opts.readOnly === true || image.write === undefined;
    this.canFlush = !this.readOnly && image.flush !== undefined;
    this.canTrim = !this.readOnly && image.discard !== undefined;
    this.canZero = !this.readOnly;
    this.granule = Math.max(allocationGranule(image), ss);
    this.realHoles = image.format === 'vhd-dynamic';
    if (opts.directFile !== undefined) {
      const file = opts.directFile;
      this.direct = { file, plan: (offset, length) => this.planDirectRead(offset, length) };
    }
    this.description = `vhdcrypt ${layout.label} (aes-xts-plain64, ${ss}-byte sectors) in a ${image.format} image`;
  }

  /** Serve `layout`'s payload of `image` through `xts` (both owned by the backing from now on). */
  static async open(image: ContainerImage, xts: Xts, layout: PayloadLayout, opts: EncryptedBackingOptions = {}): Promise<EncryptedBacking> {
    return new EncryptedBacking(image, xts, layout, await mapContainer(image), opts);
  }

  // ---- reads -------------------------------------------------------------

  async read(offset: bigint, length: number): Promise<Uint8Array> {
    const [a, b] = this.alignOut(offset, offset + BigInt(length));
    const plain = await this.readPlain(a, b);
    const at = Number(offset - a);
    return plain.subarray(at, at + length);
  }

  async readSparse(offset: bigint, length: number): Promise<ReadSegment[]> {
    const end = offset + BigInt(length);
    const [a, b] = this.alignOut(offset, end);
    if (this.map.isAllocated(this.d + a, this.d + b)) {
      // The common case (a fully allocated range): one read, one decrypt batch.
      const buf = acquireBuffer(Number(b - a));
      await this.image.read(this.d + a, buf);
      this.decrypt(buf, a);
      const at = Number(offset - a);
      return [{ length, data: buf.subarray(at, at + length) }];
    }
    const out: ReadSegment[] = [];
    for (const run of this.sectorRuns(a, b)) {
      const s = run.start > offset ? run.start : offset;
      const e = run.end < end ? run.end : end;
      if (!run.allocated) {
        out.push({ length: Number(e - s), data: null });
        continue;
      }
      const buf = acquireBuffer(Number(run.end - run.start));
      await this.image.read(this.d + run.start, buf);
      this.decrypt(buf, run.start);
      out.push({ length: Number(e - s), data: buf.subarray(Number(s - run.start), Number(e - run.start)) });
    }
    return out;
  }

  /** Whole, sector-aligned, allocated reads that lie contiguously in the container file go to the native reply thread. */
  private planDirectRead(offset: bigint, length: number): DirectReadPlan | null {
    const end = offset + BigInt(length);
    if (length === 0 || offset % this.ss !== 0n || end % this.ss !== 0n || !this.map.isAllocated(this.d + offset, this.d + end)) return null;
    const filePosition = this.image.fileSpan?.(this.d + offset, length) ?? null;
    if (filePosition === null) return null;
    const t = this.layout.tweak(offset);
    return { filePosition, firstTweak: t.firstTweak, tweakStep: t.tweakStep, sectorSize: this.layout.sectorSize };
  }

  async blockStatus(offset: bigint, length: number): Promise<BlockStatusExtent[]> {
    const end = offset + BigInt(length);
    const [a, b] = this.alignOut(offset, end);
    return this.sectorRuns(a, b, 65536).map((r) => {
      const s = r.start > offset ? r.start : offset;
      const e = r.end < end ? r.end : end;
      return { length: Number(e - s), flags: r.allocated ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO };
    });
  }

  // ---- writes ------------------------------------------------------------

  async write(offset: bigint, data: Uint8Array, fua: boolean): Promise<void> {
    this.checkWritable();
    await this.writePlain(offset, data);
    if (fua) await this.flush();
  }

  async trim(offset: bigint, length: number): Promise<void> {
    this.checkWritable();
    // TRIM is a hint (proto.md NBD_CMD_TRIM): only whole allocation units are dropped.
    await this.deallocate(offset, offset + BigInt(length));
  }

  async zero(offset: bigint, length: number, mayTrim: boolean): Promise<void> {
    this.checkWritable();
    const end = offset + BigInt(length);
    let pieces: Array<[bigint, bigint]> = [[offset, end]];
    if (mayTrim) {
      const dropped = await this.deallocate(offset, end);
      if (dropped !== null) pieces = [[offset, dropped[0]], [dropped[1], end]];
    }
    for (const [s, e] of pieces) {
      for (let pos = s; pos < e; ) {
        const step = e - pos < BigInt(ZERO_CHUNK.length) ? Number(e - pos) : ZERO_CHUNK.length;
        const [a, b] = this.alignOut(pos, pos + BigInt(step));
        // Already reading as zeros (a hole that persists): nothing to do unless the client asked for no holes.
        if (!(mayTrim && this.realHoles && this.map.isHole(this.d + a, this.d + b))) await this.writePlain(pos, ZERO_CHUNK.subarray(0, step));
        pos += BigInt(step);
      }
    }
  }

  async flush(): Promise<void> {
    if (this.canFlush) await this.image.flush!();
  }

  async close(): Promise<void> {
    try {
      await this.image.close();
    } finally {
      this.direct?.file.dispose();
      this.xts.dispose();
    }
  }

  // ---- internals ---------------------------------------------------------

  private checkWritable(): void {
    if (this.readOnly) throw new NbdRequestError(NBD_EPERM, 'the export is read-only');
  }

  /** [start, end) widened to whole crypto sectors. */
  private alignOut(start: bigint, end: bigint): [bigint, bigint] {
    const ss = this.ss;
    return [(start / ss) * ss, ((end + ss - 1n) / ss) * ss];
  }

  private decrypt(buf: Uint8Array, payloadOffset: bigint): void {
    const t = this.layout.tweak(payloadOffset);
    this.xts.decryptSectors(buf, t.firstTweak, this.layout.sectorSize, { tweakStep: t.tweakStep });
  }

  private encryptInto(plain: Uint8Array, payloadOffset: bigint, out: Uint8Array): void {
    const t = this.layout.tweak(payloadOffset);
    this.xts.encryptSectors(plain, t.firstTweak, this.layout.sectorSize, { tweakStep: t.tweakStep, out });
  }

  /**
   * Sector-aligned runs covering [a, b): a sector with any allocated byte in
   * the container counts as allocated (it is read and decrypted whole).
   */
  private sectorRuns(a: bigint, b: bigint, max = Number.MAX_SAFE_INTEGER): SectorRun[] {
    const runs: SectorRun[] = [];
    for (const seg of this.map.segments(this.d + a, this.d + b, max)) {
      let s = seg.offset - this.d;
      let e = s + seg.length;
      if (seg.allocated) [s, e] = this.alignOut(s, e);
      else {
        // Holes shrink to whole sectors; partial sectors belong to the neighbouring allocated run.
        s = ((s + this.ss - 1n) / this.ss) * this.ss;
        e = (e / this.ss) * this.ss;
      }
      if (s < a) s = a;
      if (e > b) e = b;
      const last = runs[runs.length - 1];
      if (last !== undefined && s < last.end) s = last.end;
      if (s >= e) continue;
      if (last !== undefined && s > last.end) runs.push({ start: last.end, end: s, allocated: true });
      const prev = runs[runs.length - 1];
      if (prev !== undefined && prev.allocated === seg.allocated && prev.end === s) runs[runs.length - 1] = { start: prev.start, end: e, allocated: prev.allocated };
      else runs.push({ start: s, end: e, allocated: seg.allocated });
    }
    return runs;
  }

  /** Plaintext of sector-aligned [a, b): holes as zeros, allocated runs decrypted (one batch each). */
  private async readPlain(a: bigint, b: bigint): Promise<Uint8Array> {
    const buf = acquireBuffer(Number(b - a));
    await Promise.all(
      this.sectorRuns(a, b).map(async (r) => {
        const view = buf.subarray(Number(r.start - a), Number(r.end - a));
        if (!r.allocated) {
          view.fill(0);
          return;
        }
        await this.image.read(this.d + r.start, view);
        this.decrypt(view, r.start);
      }),
    );
    return buf;
  }

  /** The payload range of whole container allocation units around [a, b), inside the payload. */
  private fillRange(a: bigint, b: bigint): [bigint, bigint] {
    let [s, e] = widenToGranules(this.d + a, this.d + b, this.granule, this.image.virtualSize);
    if (s < this.d) s = this.d;
    if (e > this.d + this.size) e = this.d + this.size;
    return [s - this.d, e - this.d];
  }

  private async writePlain(offset: bigint, data: Uint8Array): Promise<void> {
    const end = offset + BigInt(data.length);
    const [a, b] = this.alignOut(offset, end);
    let release = await this.lock.acquire(a, b);
    try {
      if (!this.map.isAllocated(this.d + a, this.d + b)) {
        // First write into a hole: take the whole allocation unit and fill it.
        release();
        const [fs, fe] = this.fillRange(a, b);
        release = await this.lock.acquire(fs, fe);
        if (!this.map.isAllocated(this.d + a, this.d + b)) {
          const plain = await this.readPlain(fs, fe);
          plain.set(data, Number(offset - fs));
          this.encryptInto(plain, fs, plain);
          await this.image.write!(this.d + fs, plain);
          releaseBuffers([plain]);
          const [ms, me] = widenToGranules(this.d + fs, this.d + fe, this.granule, this.image.virtualSize);
          this.map.markAllocated(ms, me);
          return;
        }
      }
      const cipher = acquireBuffer(Number(b - a));
      if (a === offset && b === end) {
        this.encryptInto(data, a, cipher);
      } else {
        // Read-modify-write of the partial first and last sectors.
        const ss = this.ss;
        if (offset !== a) await this.readSectorInto(cipher, a, a);
        if (end !== b && (b - ss !== a || offset === a)) await this.readSectorInto(cipher, a, b - ss);
        cipher.set(data, Number(offset - a));
        this.encryptInto(cipher, a, cipher);
      }
      await this.image.write!(this.d + a, cipher);
      releaseBuffers([cipher]);
    } finally {
      release();
    }
  }

  /** Decrypt the sector at payload offset `sector` into buf (whose first byte is payload offset `bufStart`). */
  private async readSectorInto(buf: Uint8Array, bufStart: bigint, sector: bigint): Promise<void> {
    const at = Number(sector - bufStart);
    const view = buf.subarray(at, at + this.layout.sectorSize);
    await this.image.read(this.d + sector, view);
    this.decrypt(view, sector);
  }

  /** Drop whole container allocation units inside [start, end); returns the payload range dropped, or null. */
  private async deallocate(start: bigint, end: bigint): Promise<[bigint, bigint] | null> {
    if (this.image.discard === undefined || !this.realHoles) return null;
    const [s, e] = narrowToGranules(this.d + start, this.d + end, this.granule, this.image.virtualSize);
    if (s >= e) return null;
    const release = await this.lock.acquire(s - this.d, e - this.d);
    try {
      await this.image.discard(s, e - s);
      this.map.markHole(s, e);
    } finally {
      release();
    }
    return [s - this.d, e - this.d];
  }
}
