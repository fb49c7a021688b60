/**
 * The native addon (native/, built by node-gyp into build/Release/vhdcrypt_native.node), loaded by this module
 * only, once per thread (the addon keeps per-environment state, so every worker thread loads its own instance).
 * The error factory is installed before the addon is handed to anyone, so every error the addon raises is one of
 * ours: an XtsError for the crypto core's codes, an NbdError for the NBD reply thread's, a VhdcryptError for any
 * other declared code. Users: the XTS backend (src/crypto/native-backend.ts, which reports why the addon cannot
 * load), the file I/O and AF-merge helpers (each has a portable path when the addon is missing), the NBD server's
 * reply thread (src/nbd/native-replies.ts), peer credentials and heap trimming.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { XtsBackendUnavailableError, XtsError, type XtsErrorCode } from './crypto/backend-errors.js';
import { isErrorCode } from './error-codes.js';
import { VhdcryptError } from './errors.js';
import { NbdError, NbdNativeIoError, type NbdErrorCode } from './nbd/errors.js';
import { nativeAddonPath } from './package-root.js';

/** The addon's exports; each user describes (and checks) the functions it calls. */
export type NativeAddonExports = Record<string, unknown>;

export type NativeAddonLoad = { readonly addon: NativeAddonExports; readonly error?: undefined } | { readonly addon?: undefined; readonly error: string };

/**
 * The factory the addon builds its errors with: (code, message, errnoName?) from native/addon.cc ThrowTyped.
 * A code that is not declared in src/error-codes.ts is a bug in the addon: it surfaces as a plain Error (exit 70,
 * "internal error") naming the code, never as a typed error with a made-up status.
 */
export function makeNativeError(code: string, message: string, errnoName?: string): Error {
  if (!isErrorCode(code)) return new Error(`the native addon raised an undeclared error code ${code}: ${message}`);
  if (code === 'XTS_BACKEND_UNAVAILABLE') return new XtsBackendUnavailableError(message);
  if (code.startsWith('XTS_')) return new XtsError(code as XtsErrorCode, message);
  if (code === 'NBD_NATIVE_IO') return new NbdNativeIoError(message, errnoName ?? 'EIO');
  if (code.startsWith('NBD_')) return new NbdError(code as NbdErrorCode, message);
  return new VhdcryptError(code, message);
}

let loaded: NativeAddonLoad | undefined;

/** The addon, with its error factory installed, or why it cannot be loaded. */
export function loadNativeAddon(): NativeAddonLoad {
  if (loaded !== undefined) return loaded;
  const path = nativeAddonPath();
  if (path === undefined) {
    loaded = { error: 'cannot find the vhdcrypt package root to locate the native addon' };
  } else if (!existsSync(path)) {
    loaded = { error: `native addon not built (${path} is missing; run "npm run build:native")` };
  } else {
    try {
      const addon = createRequire(import.meta.url)(path) as NativeAddonExports;
      (addon.setErrorFactory as (factory: typeof makeNativeError) => void)(makeNativeError);
      loaded = { addon };
    } catch (e) {
      loaded = { error: `native addon failed to load: ${e instanceof Error ? e.message : String(e)}` };
    }
  }
  return loaded;
}

/** The addon's exports, or null when it is not built or cannot load (the XTS backend reports why). */
export function nativeAddon(): NativeAddonExports | null {
  return loadNativeAddon().addon ?? null;
}
