/**
 * Early writeback: ask the kernel to start writing a file's dirty pages now
 * (Linux sync_file_range(SYNC_FILE_RANGE_WRITE), through the native addon), so
 * a long sequential job keeps the disk busy while it runs and its closing fsync
 * has little left to do. No durability comes from it; a no-op when the addon
 * is not built or the platform has no such call.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { nativeAddonPath } from '../package-root.js';

type StartWriteback = (fd: number) => boolean;

let cached: StartWriteback | null | undefined;

function load(): StartWriteback | null {
  if (cached !== undefined) return cached;
  cached = null;
  const path = nativeAddonPath();
  if (path !== undefined && existsSync(path)) {
    try {
      const addon = createRequire(import.meta.url)(path) as { startWriteback?: StartWriteback };
      if (typeof addon.startWriteback === 'function') cached = addon.startWriteback;
    } catch {
      // The crypto backend reports a broken addon; here it only means no early writeback.
    }
  }
  return cached;
}

/** Start writeback of `fd`'s dirty pages; true when the kernel took the request. */
export function startWriteback(fd: number): boolean {
  const f = load();
  return f === null ? false : f(fd);
}
