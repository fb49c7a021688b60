/**
 * The native addon (native/, built by node-gyp into build/Release/vhdcrypt_native.node), loaded by this module
 * only, once per thread (the addon keeps per-environment state, so every worker thread loads its own instance).
 * The error factory is installed before the addon is handed to anyone, so every error the addon raises is one of
 * ours: each part that uses the addon registers how its codes become its error classes (the crypto core: XtsError;
 * the NBD reply thread: NbdError), and any other declared code is a VhdcryptError. A root module imports no folder,
 * so the classes come to this one by registration, never by import. Users: the XTS backend (src/crypto/native-backend.ts, which reports why the addon cannot
 * load), the file I/O and AF-merge helpers (each has a portable path when the addon is missing), the NBD server's
 * reply thread (src/nbd/native-replies.ts), peer credentials and heap trimming.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isErrorCode, type ErrorCode } from './error-codes.js';
import { VhdcryptError } from './errors.js';
import { nativeAddonPath } from './package-root.js';

/** The addon's exports; each user describes (and checks) the functions it calls. */
export type NativeAddonExports = Record<string, unknown>;

export type NativeAddonLoad = { readonly addon: NativeAddonExports; readonly error?: undefined } | { readonly addon?: undefined; readonly error: string };

/** Builds the error for one of a part's codes: (code, message, errnoName?) as native/addon.cc ThrowTyped gives them. */
export type NativeErrorMaker = (code: ErrorCode, message: string, errnoName?: string) => Error;

const makers = new Map<string, NativeErrorMaker>();

/** A part's error classes for the codes that start with `prefix` and an underscore (XTS_, NBD_). */
export function registerNativeErrors(prefix: string, make: NativeErrorMaker): void {
  makers.set(prefix, make);
}

/**
 * The factory the addon builds its errors with. A code that is not declared in src/error-codes.ts is a bug in the
 * addon: it surfaces as a plain Error (exit 70, "internal error") naming the code, never as a typed error with a
 * made-up status.
 */
export function makeNativeError(code: string, message: string, errnoName?: string): Error {
  if (!isErrorCode(code)) return new Error(`the native addon raised an undeclared error code ${code}: ${message}`);
  const make = makers.get(code.slice(0, code.indexOf('_')));
  return make !== undefined ? make(code, message, errnoName) : new VhdcryptError(code, message);
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
