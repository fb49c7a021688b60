/**
 * Which byte ranges of a container are allocated: a sorted list of disjoint
 * [start, end) intervals, built once from the image's extents() and kept up
 * to date as the server writes and deallocates. Answers "what is allocated in
 * this range" by binary search, so BLOCK_STATUS and sparse reads cost
 * O(log n) rather than a walk of the whole image.
 */

export interface MapSegment {
  readonly offset: bigint;
  readonly length: bigint;
  readonly allocated: boolean;
}

export class ExtentMap {
  private starts: bigint[] = [];
  private ends: bigint[] = [];

  constructor(readonly size: bigint) {}

  /** Build from an image's merged extents (any order of adjacent allocated runs is fine). */
  static async fromExtents(
    size: bigint,
    extents: AsyncIterable<{ offset: bigint; length: bigint; allocated: boolean }>,
  ): Promise<ExtentMap> {
    const map = new ExtentMap(size);
    for await (const e of extents) if (e.allocated && e.length > 0n) map.markAllocated(e.offset, e.offset + e.length);
    return map;
  }

  /** Number of allocated intervals (for tests and diagnostics). */
  get intervalCount(): number {
    return this.starts.length;
  }

  /** Index of the first interval whose end is after `pos`. */
  private firstEndingAfter(pos: bigint): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid]! <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Mark [start, end) allocated, merging with neighbours. */
  markAllocated(start: bigint, end: bigint): void {
    if (end > this.size) end = this.size;
    if (start >= end) return;
    // Intervals touching [start, end) (adjacent ones included) merge into one.
    let i = this.firstEndingAfter(start);
    if (i > 0 && this.ends[i - 1] === start) i--;
    let j = i;
    let s = start;
    let e = end;
    while (j < this.starts.length && this.starts[j]! <= end) {
      if (this.starts[j]! < s) s = this.starts[j]!;
      if (this.ends[j]! > e) e = this.ends[j]!;
      j++;
    }
    this.starts.splice(i, j - i, s);
    this.ends.splice(i, j - i, e);
  }

  /** Mark [start, end) unallocated, splitting intervals as needed. */
  markHole(start: bigint, end: bigint): void {
    if (end > this.size) end = this.size;
    if (start >= end) return;
    const i = this.firstEndingAfter(start);
    let j = i;
    const newStarts: bigint[] = [];
    const newEnds: bigint[] = [];
    while (j < this.starts.length && this.starts[j]! < end) {
      if (this.starts[j]! < start) {
        newStarts.push(this.starts[j]!);
        newEnds.push(start);
      }
      if (this.ends[j]! > end) {
        newStarts.push(end);
        newEnds.push(this.ends[j]!);
      }
      j++;
    }
    this.starts.splice(i, j - i, ...newStarts);
    this.ends.splice(i, j - i, ...newEnds);
  }

  /** True when every byte of [start, end) is allocated. */
  isAllocated(start: bigint, end: bigint): boolean {
    const i = this.firstEndingAfter(start);
    return i < this.starts.length && this.starts[i]! <= start && this.ends[i]! >= end;
  }

  /** True when no byte of [start, end) is allocated. */
  isHole(start: bigint, end: bigint): boolean {
    const i = this.firstEndingAfter(start);
    return i >= this.starts.length || this.starts[i]! >= end;
  }

  /** Consecutive segments covering [start, end) in order; with `maxSegments` the list may stop short of `end`. */
  segments(start: bigint, end: bigint, maxSegments = Number.MAX_SAFE_INTEGER): MapSegment[] {
    if (end > this.size) end = this.size;
    const out: MapSegment[] = [];
    let pos = start;
    let i = this.firstEndingAfter(start);
    while (pos < end && out.length < maxSegments) {
      const s = i < this.starts.length ? this.starts[i]! : end;
      if (s > pos) {
        const holeEnd = s < end ? s : end;
        out.push({ offset: pos, length: holeEnd - pos, allocated: false });
        pos = holeEnd;
        continue;
      }
      const e = this.ends[i]! < end ? this.ends[i]! : end;
      out.push({ offset: pos, length: e - pos, allocated: true });
      pos = e;
      i++;
    }
    return out;
  }
}
