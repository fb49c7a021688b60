/**
 * Block sector bitmaps: bit i (most significant bit of byte i/8 first, the
 * order blktap/Hyper-V use) set means sector i of the block is in this file.
 */
export function bitmapTest(map: Uint8Array, sector: number): boolean {
  return (map[sector >>> 3]! & (0x80 >>> (sector & 7))) !== 0;
}

/** Set bits [from, to); returns true when any bit changed. */
export function bitmapSetRange(map: Uint8Array, from: number, to: number): boolean {
  let changed = false;
  for (let s = from; s < to; s++) {
    const i = s >>> 3;
    const m = 0x80 >>> (s & 7);
    if ((map[i]! & m) === 0) {
      map[i]! |= m;
      changed = true;
    }
  }
  return changed;
}

/** Length of the run of sectors from `from` (below `to`) whose bit equals that of `from`. */
export function bitmapRun(map: Uint8Array, from: number, to: number): number {
  const v = bitmapTest(map, from);
  let s = from + 1;
  while (s < to && bitmapTest(map, s) === v) s++;
  return s - from;
}
