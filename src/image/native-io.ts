/**
 * The native addon's file I/O helpers, for the image layer (Linux; no-ops or
 * "unknown" when the addon is not built or the platform lacks the call):
 *  - early writeback: sync_file_range(SYNC_FILE_RANGE_WRITE) starts writing a
 *    file's dirty pages now, so a long sequential job keeps the disk busy and
 *    its closing fsync has little left to do (no durability comes from it);
 *  - buffer addresses, which JS cannot see, for O_DIRECT's alignment rule;
 *  - fallocate(2): reserving blocks ahead of direct writes, punching them back.
 */
import { constants as osConstants } from 'node:os';
import { nativeAddon } from '../native-addon.js';

interface NativeIo {
  startWriteback?: (fd: number) => boolean;
  addressMisalignment?: (view: Uint8Array, alignment: number) => number;
  adviseHugePages?: (view: Uint8Array) => number;
  fileSpace?: (fd: number, offset: number, length: number, punch: boolean) => Promise<number>;
}

function load(): NativeIo {
  return (nativeAddon() ?? {}) as NativeIo;
}

/** Start writeback of `fd`'s dirty pages; true when the kernel took the request. */
export function startWriteback(fd: number): boolean {
  const f = load().startWriteback;
  return typeof f === 'function' ? f(fd) : false;
}

/** Bytes by which `view` starts past a multiple of `alignment` (a power of two), or undefined when unknown. */
export function addressMisalignment(view: Uint8Array, alignment: number): number | undefined {
  const f = load().addressMisalignment;
  if (typeof f !== 'function') return undefined;
  const r = f(view, alignment);
  return r >= 0 ? r : undefined;
}

/** x86-64's transparent huge page (and arm64's with 4 KiB pages). */
export const HUGE_PAGE_BYTES = 2 << 20;

/**
 * `bytes` bytes of `buffer`, which must hold `bytes + HUGE_PAGE_BYTES`, from its first 2 MiB address boundary (from its
 * start when the addon cannot tell addresses), advised for transparent huge pages before their first touch
 * (native/huge_pages.cc): each 2 MiB then takes one page fault instead of 512, which on the VMs this is measured on
 * is ~1 ms instead of ~8 (docs/performance.md). The rest of the buffer is address space never touched.
 */
export function hugePageView(buffer: ArrayBufferLike, bytes: number): Uint8Array {
  const skew = addressMisalignment(new Uint8Array(buffer, 0, 1), HUGE_PAGE_BYTES);
  const base = skew === undefined || skew === 0 ? 0 : HUGE_PAGE_BYTES - skew;
  const view = new Uint8Array(buffer, base, bytes);
  load().adviseHugePages?.(view);
  return view;
}

/**
 * fallocate(2) with FALLOC_FL_KEEP_SIZE on [offset, offset + length): reserve the blocks, or with `punch`
 * give them back (a hole). Resolves 0 or the errno; EOPNOTSUPP without the addon or the call.
 */
export function fileSpace(fd: number, offset: number, length: number, punch: boolean): Promise<number> {
  const f = load().fileSpace;
  return typeof f === 'function' ? f(fd, offset, length, punch) : Promise.resolve(osConstants.errno.EOPNOTSUPP);
}
