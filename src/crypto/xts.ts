/**
 * AES-XTS over runs of disk sectors (IEEE 1619-2018, NIST SP 800-38E), with the
 * plain64 tweak of dm-crypt: sector k of a batch is tweak number
 * firstTweak + k * tweakStep, written as a 64-bit little-endian integer padded
 * to 16 bytes. This front checks every argument once; backends only compute.
 */
import { timingSafeEqual } from 'node:crypto';
import { XtsBackendUnavailableError, XtsError } from './backend-errors.js';
import type { BackendName, XtsBackend, XtsKernelInstance } from './kernel.js';
import { loadJsBackend } from './js-backend.js';
import { loadNativeBackend, nativeKernels } from './native-backend.js';
import { loadWasmBackend } from './wasm-backend.js';

export type BackendChoice = 'auto' | BackendName;

export interface XtsOptions {
  /** Which backend to run; 'auto' takes native, then wasm, then js. */
  backend?: BackendChoice;
  /** Force one native kernel ('vaes-avx512', 'vaes-avx2', 'aesni'); for tests and benchmarks. */
  kernel?: string;
}

export interface SectorOptions {
  /** Destination of the same length; default: in place. */
  out?: Uint8Array;
  /** Tweak increment between consecutive sectors (default 1). */
  tweakStep?: number;
}

export interface Xts {
  readonly backend: BackendName;
  readonly kernel: string;
  encryptSectors(data: Uint8Array, firstTweak: bigint, sectorSize: number, opts?: SectorOptions): void;
  decryptSectors(data: Uint8Array, firstTweak: bigint, sectorSize: number, opts?: SectorOptions): void;
  dispose(): void;
}

const MAX_TWEAK = (1n << 64n) - 1n;
const MAX_TWEAK_STEP = 0xffff_ffff;

function describe(v: unknown): string {
  if (v instanceof Uint8Array) return `Uint8Array of length ${v.length}`;
  if (v === null) return 'null';
  return typeof v;
}

function checkKey(key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || (key.length !== 32 && key.length !== 64)) {
    throw new XtsError('XTS_BAD_KEY', `"key" expected Uint8Array of length 32 or 64, got ${describe(key)}`);
  }
  const half = key.length / 2;
  // IEEE 1619-2018 §5.1 and FIPS 140 IG C.I require Key1 != Key2.
  if (timingSafeEqual(key.subarray(0, half), key.subarray(half))) {
    throw new XtsError('XTS_EQUAL_KEY_HALVES', '"key" halves are equal; XTS requires two different AES keys');
  }
}

function overlaps(a: Uint8Array, b: Uint8Array): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.length && b.byteOffset < a.byteOffset + a.length;
}

/** Resolve a backend by choice, collecting every failure so 'auto' can say what it tried. */
function loadBackend(choice: BackendChoice, kernel: string | undefined): XtsBackend {
  if (kernel !== undefined && choice !== 'native' && choice !== 'auto') {
    throw new XtsError('XTS_BAD_ARG', `"kernel" is a native option; backend '${choice}' has none`);
  }
  switch (choice) {
    case 'native':
      return loadNativeBackend(kernel);
    case 'wasm':
      return loadWasmBackend();
    case 'js':
      return loadJsBackend();
    case 'auto': {
      const failures: string[] = [];
      for (const load of [() => loadNativeBackend(kernel), loadWasmBackend, loadJsBackend]) {
        try {
          return load();
        } catch (e) {
          if (!(e instanceof XtsBackendUnavailableError)) throw e;
          failures.push(e.message);
        }
      }
      throw new XtsBackendUnavailableError(`no XTS backend could load: ${failures.join('; ')}`);
    }
    default:
      throw new XtsError('XTS_BAD_ARG', `"backend" expected 'auto', 'native', 'wasm' or 'js', got ${String(choice)}`);
  }
}

class XtsFront implements Xts {
  readonly backend: BackendName;
  readonly kernel: string;
  private instance: XtsKernelInstance | null;

  constructor(backend: XtsBackend, key: Uint8Array) {
    this.backend = backend.backend;
    this.kernel = backend.kernel;
    this.instance = backend.create(key);
  }

  encryptSectors(data: Uint8Array, firstTweak: bigint, sectorSize: number, opts?: SectorOptions): void {
    this.run(true, data, firstTweak, sectorSize, opts);
  }

  decryptSectors(data: Uint8Array, firstTweak: bigint, sectorSize: number, opts?: SectorOptions): void {
    this.run(false, data, firstTweak, sectorSize, opts);
  }

  dispose(): void {
    this.instance?.dispose();
    this.instance = null;
  }

  private run(encrypt: boolean, data: Uint8Array, firstTweak: bigint, sectorSize: number, opts?: SectorOptions): void {
    const instance = this.instance;
    if (instance === null) throw new XtsError('XTS_DISPOSED', 'this Xts was disposed; create a new one');
    if (!(data instanceof Uint8Array)) throw new XtsError('XTS_BAD_ARG', `"data" expected Uint8Array, got ${describe(data)}`);
    if (!Number.isInteger(sectorSize) || sectorSize < 16 || sectorSize > 4096 || (sectorSize & (sectorSize - 1)) !== 0) {
      throw new XtsError('XTS_BAD_SECTOR_SIZE', `"sectorSize" expected a power of two from 16 to 4096, got ${String(sectorSize)}`);
    }
    if (data.length % sectorSize !== 0) {
      throw new XtsError('XTS_BAD_LENGTH', `"data" length ${data.length} is not a whole number of ${sectorSize}-byte sectors`);
    }
    const tweakStep = opts?.tweakStep ?? 1;
    if (!Number.isInteger(tweakStep) || tweakStep < 1 || tweakStep > MAX_TWEAK_STEP) {
      throw new XtsError('XTS_BAD_ARG', `"tweakStep" expected an integer from 1 to 2^32-1, got ${String(tweakStep)}`);
    }
    if (typeof firstTweak !== 'bigint' || firstTweak < 0n || firstTweak > MAX_TWEAK) {
      throw new XtsError('XTS_TWEAK_OVERFLOW', `"firstTweak" expected a bigint from 0 to 2^64-1, got ${String(firstTweak)}`);
    }
    const sectors = data.length / sectorSize;
    if (sectors > 0 && firstTweak + BigInt(sectors - 1) * BigInt(tweakStep) > MAX_TWEAK) {
      throw new XtsError('XTS_TWEAK_OVERFLOW', `a batch of ${sectors} sectors from tweak ${firstTweak} (step ${tweakStep}) passes 2^64-1`);
    }
    let out = opts?.out ?? data;
    if (!(out instanceof Uint8Array) || out.length !== data.length) {
      throw new XtsError('XTS_BAD_LENGTH', `"out" expected Uint8Array of length ${data.length}, got ${describe(out)}`);
    }
    if (sectors === 0) return;
    let src = data;
    // A partial overlap would let early output blocks clobber later input: work from a copy.
    const sameView = out.buffer === data.buffer && out.byteOffset === data.byteOffset;
    if (!sameView && overlaps(data, out)) src = new Uint8Array(data); // a copy, not a view
    try {
      instance.crypt(encrypt, src, out, firstTweak, sectorSize, tweakStep);
    } finally {
      if (src !== data) src.fill(0);
    }
  }
}

/** Create an AES-XTS instance over a 32- or 64-byte key; the key is copied, never kept by reference. */
export function createXts(key: Uint8Array, opts: XtsOptions = {}): Xts {
  checkKey(key);
  return new XtsFront(loadBackend(opts.backend ?? 'auto', opts.kernel), key);
}

/** Every backend and native kernel that can run on this machine, best first. */
export function availableBackends(): Array<{ backend: BackendName; kernel: string }> {
  const found: Array<{ backend: BackendName; kernel: string }> = [];
  for (const kernel of nativeKernels()) found.push({ backend: 'native', kernel });
  for (const load of [loadWasmBackend, loadJsBackend]) {
    try {
      const b = load();
      found.push({ backend: b.backend, kernel: b.kernel });
    } catch (e) {
      if (!(e instanceof XtsBackendUnavailableError)) throw e;
    }
  }
  return found;
}
