/**
 * Reusable read buffers for the server's hot path: a READ reply's data is
 * allocated from here and handed back once the socket has taken it, so a
 * full-disk copy does not churn gigabytes of external memory through the GC.
 * Buffers come back uninitialised: callers fill every byte they send.
 */
import { nativeAddon } from '../native-addon.js';

const MIN_POOLED = 64 * 1024;
const MAX_POOLED = 32 * 1024 * 1024;
/** Bytes kept idle per size class at most. */
const MAX_IDLE_BYTES = 16 * 1024 * 1024;
/** Bytes kept idle in all classes together at most (replies are read in pieces of at most 1 MiB: few classes are hot). */
const MAX_IDLE_TOTAL = 32 * 1024 * 1024;
let idleTotal = 0;

const free = new Map<number, ArrayBuffer[]>();
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
  const reused = list?.pop();
  if (reused !== undefined) idleTotal -= c;
  const ab = reused ?? new ArrayBuffer(c);
  pooled.add(ab);
  return new Uint8Array(ab, 0, length);
}

/** Give back the buffers behind these views (each at most once; unpooled ones are ignored). */
export function releaseBuffers(views: Iterable<Uint8Array>): void {
  const seen = new Set<ArrayBufferLike>();
  for (const v of views) {
    const ab = v.buffer;
    if (seen.has(ab) || !pooled.has(ab)) continue;
    seen.add(ab);
    pooled.delete(ab);
    if (ab instanceof ArrayBuffer) {
      let list = free.get(ab.byteLength);
      if (list === undefined) free.set(ab.byteLength, (list = []));
      if ((list.length + 1) * ab.byteLength <= MAX_IDLE_BYTES && idleTotal + ab.byteLength <= MAX_IDLE_TOTAL) {
        list.push(ab);
        idleTotal += ab.byteLength;
      }
    }
  }
}

/**
 * Give idle memory back when the server has no client: drop the pool's idle buffers (the GC frees them) and ask
 * glibc to return its free heap pages (native trimHeap; without the addon only the pool is dropped).
 */
export function releaseIdleMemory(): void {
  free.clear();
  idleTotal = 0;
  const trim = nativeAddon()?.trimHeap;
  if (typeof trim === 'function') (trim as () => boolean)();
}
