/**
 * Turning allocation into extents: ranges are [start, end) pairs of plain
 * numbers in a flat array (disk offsets stay far below 2^53), sorted and
 * disjoint; the output is merged and covers the range asked for.
 */
import type { Extent } from './types.js';

/** Flat [s0, e0, s1, e1, ...] list of sorted disjoint allocated ranges. */
export type RangeList = number[];

/** Append [s, e) to `ranges`, merging with the previous range when they touch. */
export function pushRange(ranges: RangeList, s: number, e: number): void {
  if (e <= s) return;
  const n = ranges.length;
  if (n > 0 && ranges[n - 1]! >= s) {
    if (e > ranges[n - 1]!) ranges[n - 1] = e;
    return;
  }
  ranges.push(s, e);
}

/** Union of two sorted disjoint range lists. */
export function unionRanges(a: RangeList, b: RangeList): RangeList {
  const out: RangeList = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (j >= b.length || (i < a.length && a[i]! <= b[j]!)) {
      pushRange(out, a[i]!, a[i + 1]!);
      i += 2;
    } else {
      pushRange(out, b[j]!, b[j + 1]!);
      j += 2;
    }
  }
  return out;
}

/** Extents covering [from, to): allocated ranges (clipped) and the gaps between them. */
export function* extentsFromRanges(ranges: RangeList, from: number, to: number): Generator<Extent> {
  let pos = from;
  for (let i = 0; i < ranges.length; i += 2) {
    const s = Math.max(Math.min(ranges[i]!, to), from);
    const e = Math.max(Math.min(ranges[i + 1]!, to), from);
    if (e <= s) continue;
    if (s > pos) yield { offset: BigInt(pos), length: BigInt(s - pos), allocated: false };
    yield { offset: BigInt(s), length: BigInt(e - s), allocated: true };
    pos = e;
  }
  if (pos < to) yield { offset: BigInt(pos), length: BigInt(to - pos), allocated: false };
}
