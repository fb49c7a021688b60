/**
 * The native addon's exports, loaded once, for the helpers outside the XTS backend (file I/O, LUKS AF-merge);
 * null when it is not built or cannot load (each helper then has a portable path). The XTS backend loads the
 * same file itself, to report why it cannot.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { nativeAddonPath } from './package-root.js';

let cached: Record<string, unknown> | null | undefined;

/** The addon's exports, or null. */
export function nativeAddon(): Record<string, unknown> | null {
  if (cached !== undefined) return cached;
  cached = null;
  const path = nativeAddonPath();
  if (path !== undefined && existsSync(path)) {
    try {
      cached = createRequire(import.meta.url)(path) as Record<string, unknown>;
    } catch {
      // The crypto backend reports a broken addon; here it only means the portable paths are used.
    }
  }
  return cached;
}
