/**
 * Reusable read buffers for the server's hot path: a READ reply's data is
 * allocated from here and handed back once the socket has taken it, so a
 * full-disk copy does not churn gigabytes of external memory through the GC.
 * Buffers come back uninitialised: callers fill every byte they send.
 *
 * A buffer handed back that the pool does not keep is freed at once (detached),
 * not left to the GC: the replies of clients that queued reads and left can be
 * hundreds of MiB, and a process that goes idle may run no major GC for minutes
 * (Node 24's V8 ran none in 90 s), so that memory would stay. Once released, a
 * buffer belongs to the pool: nothing may still read it, write into it or have
 * native code (a pending socket write) pointing at it.
 */
import { nativeAddon } from '../native-addon.js';

const MIN_POOLED = 64 * 1024;
const MAX_POOLED = 32 * 1024 * 1024;
/** Bytes kept idle per size class at most. */
const MAX_IDLE_BYTES = 16 * 1024 * 1024;
/** Bytes kept idle in all classes together at most (replies are read in pieces of at most 1 MiB: few classes are hot). */
const MAX_IDLE_TOTAL = 32 * 1024 * 1024;
let idleTotal = 0;
/** Bytes freed (freeNow) since glibc was last asked to return free pages. */
let freedSinceTrim = 0;

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
      } else {
        freeNow(ab);
      }
    }
  }
}

/**
 * Free an ArrayBuffer's memory now: detaching it (ECMA-262 DetachArrayBuffer) drops the engine's only reference to
 * its backing store. ArrayBuffer.prototype.transfer detaches where the engine has it (Node 22 and later), the addon
 * elsewhere; without either the GC frees it later. (A SharedArrayBuffer cannot be detached: worker threads may hold it.)
 */
function freeNow(ab: ArrayBuffer): void {
  freedSinceTrim += ab.byteLength;
  const transfer = (ab as { transfer?: (length: number) => ArrayBuffer }).transfer;
  if (typeof transfer === 'function') {
    transfer.call(ab, 0);
    return;
  }
  const detach = nativeAddon()?.detachArrayBuffer;
  if (typeof detach === 'function') (detach as (b: ArrayBuffer) => void)(ab);
}

/**
 * Give idle memory back when the server has no client: free the pool's idle buffers and ask glibc to return its
 * free heap pages (native trimHeap; without the addon only the pool is dropped).
 */
export function releaseIdleMemory(): void {
  for (const list of free.values()) for (const ab of list) freeNow(ab);
  free.clear();
  idleTotal = 0;
  trimHeap();
}

/**
 * After a connection has gone while others stay: if its buffers freed more than the pool keeps idle, ask glibc to
 * return the free pages (freed memory below the top of its heap otherwise stays in the RSS).
 */
export function returnFreedMemory(): void {
  if (freedSinceTrim > MAX_IDLE_TOTAL) trimHeap();
}

function trimHeap(): void {
  freedSinceTrim = 0;
  const trim = nativeAddon()?.trimHeap;
  if (typeof trim === 'function') (trim as () => boolean)();
}
