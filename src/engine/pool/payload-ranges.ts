/**
 * Which parts of a payload to process: the allocated extents of an image,
 * shifted into payload coordinates, widened to a granule (an output VHD block,
 * so no output block is left half written) and cut into batches.
 */
import type { Extent } from '../../image/index.js';

export interface PayloadRange {
  readonly start: bigint;
  readonly end: bigint;
}

export interface RangeSelection {
  /** Offset of the payload in the image whose extents are given. */
  readonly base: bigint;
  readonly payloadSize: bigint;
  /** Ranges are widened to multiples of this (a power of two, at least the crypto sector size). */
  readonly granule: bigint;
  /** Take the whole payload whatever the allocation (--no-sparse, flat outputs). */
  readonly all: boolean;
}

/** Allocated payload ranges, sorted, disjoint, granule-aligned (clipped to the payload end). */
export async function* payloadRanges(extents: () => AsyncIterable<Extent>, sel: RangeSelection): AsyncGenerator<PayloadRange> {
  if (sel.payloadSize <= 0n) return;
  if (sel.all) {
    yield { start: 0n, end: sel.payloadSize };
    return;
  }
  const g = sel.granule;
  let pending: { start: bigint; end: bigint } | null = null;
  for await (const e of extents()) {
    if (!e.allocated) continue;
    let a = e.offset - sel.base;
    let b = e.offset + e.length - sel.base;
    if (b <= 0n || a >= sel.payloadSize) continue;
    if (a < 0n) a = 0n;
    if (b > sel.payloadSize) b = sel.payloadSize;
    a = (a / g) * g;
    b = ((b + g - 1n) / g) * g;
    if (b > sel.payloadSize) b = sel.payloadSize;
    if (pending && a <= pending.end) {
      if (b > pending.end) pending.end = b;
      continue;
    }
    if (pending) yield pending;
    pending = { start: a, end: b };
  }
  if (pending) yield pending;
}

export interface Batch {
  readonly index: number;
  /** Payload byte offset. */
  readonly offset: bigint;
  readonly length: number;
}

/** Cut ranges into batches of at most batchBytes, numbered in order (the journal counts them). */
export async function* batchesOf(ranges: AsyncIterable<PayloadRange>, batchBytes: number): AsyncGenerator<Batch> {
  let index = 0;
  const step = BigInt(batchBytes);
  for await (const r of ranges) {
    for (let o = r.start; o < r.end; o += step) {
      const n = r.end - o < step ? r.end - o : step;
      yield { index: index++, offset: o, length: Number(n) };
    }
  }
}

/** Sum of range lengths (for progress totals). */
export async function rangesTotal(ranges: AsyncIterable<PayloadRange>): Promise<bigint> {
  let t = 0n;
  for await (const r of ranges) t += r.end - r.start;
  return t;
}
