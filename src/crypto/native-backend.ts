/**
 * The native XTS backend: the vhdcrypt_native addon (native/, built by node-gyp
 * into build/Release) with AES-NI / VAES kernels picked by CPUID at load.
 * Loaded once per thread; every error it raises is an XtsError or an
 * XtsBackendUnavailableError (the addon builds them through a factory we give it).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isErrorCode } from '../error-codes.js';
import { nativeAddonPath } from '../package-root.js';
import { XtsBackendUnavailableError, XtsError, type XtsErrorCode } from './backend-errors.js';
import type { XtsBackend, XtsKernelInstance } from './kernel.js';

/** Re-exported: tests and callers of this backend ask it where its addon lives. */
export { nativeAddonPath };

/** The kernels the addon knows, best first. */
export const NATIVE_KERNELS = ['vaes-avx512', 'vaes-avx2', 'aesni'] as const;

interface NativeXtsKey {
  readonly kernel: string;
  crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep: number): void;
  dispose(): void;
}

/** A key schedule and a dup of the container file, shared by a server's reply threads (native/nbd_direct_read.cc). */
export interface NativeDirectReadFile {
  dispose(): void;
}

/** One NBD connection's reply thread: READs answered whole from the file, other replies sent as given. */
export interface NativeReplySender {
  /** Queue a READ reply: `head`, then the decrypted bytes; `onReadError` instead if the first chunk cannot be read. False once closed. */
  read(head: Uint8Array, onReadError: Uint8Array, filePos: number, length: number, firstTweak: bigint, tweakStep: number, sectorSize: number): boolean;
  /** Queue a whole reply (copied). False once closed. */
  send(reply: Uint8Array): boolean;
  /** Stop the thread (queued replies are dropped) and close its descriptors. */
  close(): void;
}

/** The addon's NBD read path; present on Linux only. */
export interface NativeDirectRead {
  DirectReadFile: new (key: Uint8Array, kernel: string, fd: number) => NativeDirectReadFile;
  ReplySender: new (source: NativeDirectReadFile, socketFd: number, onDone: (completed: number, failure?: string) => void) => NativeReplySender;
}

interface NativeAddon extends Partial<NativeDirectRead> {
  kernels(): string[];
  setErrorFactory(factory: (code: string, message: string) => Error): void;
  XtsKey: new (key: Uint8Array, kernel: string) => NativeXtsKey;
}

type LoadResult = { addon: NativeAddon; error?: undefined } | { addon?: undefined; error: string };

let loaded: LoadResult | undefined;


/** The addon raises only XTS codes; anything else it names is reported as a bad argument, never dropped. */
function makeError(code: string, message: string): Error {
  if (code === 'XTS_BACKEND_UNAVAILABLE') return new XtsBackendUnavailableError(message);
  return new XtsError(isErrorCode(code) && code.startsWith('XTS_') ? (code as XtsErrorCode) : 'XTS_BAD_ARG', message);
}

function load(): LoadResult {
  if (loaded !== undefined) return loaded;
  const path = nativeAddonPath();
  if (path === undefined) {
    loaded = { error: 'cannot find the vhdcrypt package root to locate the native addon' };
  } else if (!existsSync(path)) {
    loaded = { error: `native addon not built (${path} is missing; run "npm run build:native")` };
  } else {
    try {
      const addon = createRequire(import.meta.url)(path) as NativeAddon;
      addon.setErrorFactory(makeError);
      loaded = { addon };
    } catch (e) {
      loaded = { error: `native addon failed to load: ${e instanceof Error ? e.message : String(e)}` };
    }
  }
  return loaded;
}

/** Native kernels usable on this CPU, best first; [] when the addon is missing. */
export function nativeKernels(): string[] {
  const { addon } = load();
  return addon === undefined ? [] : addon.kernels();
}

/** The addon's NBD read path, or undefined when the addon is missing or this platform has none. */
export function nativeDirectRead(): NativeDirectRead | undefined {
  const { addon } = load();
  if (addon?.DirectReadFile === undefined || addon.ReplySender === undefined) return undefined;
  return { DirectReadFile: addon.DirectReadFile, ReplySender: addon.ReplySender };
}

/** VHDCRYPT_CPU, read once when the backend loads: the kernel choice is made once per process. */
const FORCED_KERNEL = process.env.VHDCRYPT_CPU;

/** The kernel to run by default: the best one, or the one VHDCRYPT_CPU forces. */
function defaultKernel(usable: string[]): string {
  const forced = FORCED_KERNEL;
  if (forced === undefined || forced === '') {
    const best = usable[0];
    if (best === undefined) throw new XtsBackendUnavailableError('this CPU has no AES-NI: no native XTS kernel can run');
    return best;
  }
  if (!(NATIVE_KERNELS as readonly string[]).includes(forced)) {
    throw new XtsBackendUnavailableError(`VHDCRYPT_CPU=${forced} is not one of ${NATIVE_KERNELS.join(', ')}`);
  }
  return forced;
}

class NativeXtsInstance implements XtsKernelInstance {
  constructor(private readonly key: NativeXtsKey) {}

  crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep: number): void {
    this.key.crypt(encrypt, src, dst, firstTweak, sectorSize, tweakStep);
  }

  dispose(): void {
    this.key.dispose();
  }
}

/** The native backend running `kernel` (default: best for this CPU, or VHDCRYPT_CPU); throws XtsBackendUnavailableError. */
export function loadNativeBackend(kernel?: string): XtsBackend {
  const { addon, error } = load();
  if (addon === undefined) throw new XtsBackendUnavailableError(error);
  const usable = addon.kernels();
  const chosen = kernel ?? defaultKernel(usable);
  if (!usable.includes(chosen)) {
    const known = (NATIVE_KERNELS as readonly string[]).includes(chosen);
    throw new XtsBackendUnavailableError(
      known
        ? `native kernel '${chosen}' is not supported on this CPU (usable: ${usable.join(', ') || 'none'})`
        : `unknown native kernel '${chosen}' (known: ${NATIVE_KERNELS.join(', ')})`,
    );
  }
  return {
    backend: 'native',
    kernel: chosen,
    create: (key: Uint8Array) => new NativeXtsInstance(new addon.XtsKey(key, chosen)),
  };
}
