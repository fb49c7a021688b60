/**
 * The native XTS backend: the vhdcrypt_native addon (native/, built by node-gyp
 * into build/Release) with AES-NI / VAES kernels picked by CPUID at load.
 * Loaded once per thread by src/native-addon.ts, which installs the error
 * factory first: every error the XtsKey raises is an XtsError or an
 * XtsBackendUnavailableError.
 */
import { loadNativeAddon, registerNativeErrors, type NativeAddonLoad } from '../native-addon.js';
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

interface NativeAddon {
  kernels(): string[];
  XtsKey: new (key: Uint8Array, kernel: string) => NativeXtsKey;
}

registerNativeErrors('XTS', (code, message) =>
  code === 'XTS_BACKEND_UNAVAILABLE' ? new XtsBackendUnavailableError(message) : new XtsError(code as XtsErrorCode, message),
);

function load(): { addon: NativeAddon; error?: undefined } | { addon?: undefined; error: string } {
  const r: NativeAddonLoad = loadNativeAddon();
  return r.addon === undefined ? { error: r.error } : { addon: r.addon as unknown as NativeAddon };
}

/** Native kernels usable on this CPU, best first; [] when the addon is missing. */
export function nativeKernels(): string[] {
  const { addon } = load();
  return addon === undefined ? [] : addon.kernels();
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
