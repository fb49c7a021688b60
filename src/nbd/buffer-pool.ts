/**
 * Reusable read buffers for the server's hot path: a READ reply's data is
 * allocated from here and handed back once the socket has taken it, so a
 * full-disk copy does not churn gigabytes of external memory through the GC.
 * Buffers come back uninitialised: callers fill every byte they send.
 */
const MIN_POOLED = 64 * 1024;
const MAX_POOLED = 32 * 1024 * 1024;
/** Bytes kept idle per size class at most. */
const MAX_IDLE_BYTES = 64 * 1024 * 1024;

const free = new Map<number, ArrayBuffer[]>();
const freeShared = new Map<number, SharedArrayBuffer[]>();
const pooled = new WeakSet<ArrayBufferLike>();

function sizeClass(n: number): number {
  let c = MIN_POOLED;
  while (c < n) c *= 2;
  return c;
}

/** A Uint8Array of exactly `length` bytes, uninitialised (from the pool when the size suits). */
export function acquireBuffer(length: number): Uint8Array {
  if (length < MIN_POOLED / 4 || length > MAX_POOLED) return new Uint8Array(length);
  const c = sizeClass(length);
  const list = free.get(c);
  const ab = list?.pop() ?? new ArrayBuffer(c);
  pooled.add(ab);
  return new Uint8Array(ab, 0, length);
}

/** Like acquireBuffer, over a SharedArrayBuffer (for worker threads to fill in place). */
export function acquireSharedBuffer(length: number): Uint8Array {
  const c = sizeClass(Math.max(length, 1));
  const sab = freeShared.get(c)?.pop() ?? new SharedArrayBuffer(c);
  pooled.add(sab);
  return new Uint8Array(sab, 0, length);
}

/** Give back the buffers behind these views (each at most once; unpooled ones are ignored). */
export function releaseBuffers(views: Iterable<Uint8Array>): void {
  const seen = new Set<ArrayBufferLike>();
  for (const v of views) {
    const ab = v.buffer;
    if (seen.has(ab) || !pooled.has(ab)) continue;
    seen.add(ab);
    pooled.delete(ab);
    if (ab instanceof SharedArrayBuffer) {
      let list = freeShared.get(ab.byteLength);
      if (list === undefined) freeShared.set(ab.byteLength, (list = []));
      if ((list.length + 1) * ab.byteLength <= MAX_IDLE_BYTES) list.push(ab);
    } else if (ab instanceof ArrayBuffer) {
      let list = free.get(ab.byteLength);
      if (list === undefined) free.set(ab.byteLength, (list = []));
      if ((list.length + 1) * ab.byteLength <= MAX_IDLE_BYTES) list.push(ab);
    }
  }
}
