/**
 * The WASM backend: constant-time bitsliced AES-XTS compiled from native/wasm/xts.c
 * (see that file for the method). The .wasm is committed; `npm run build:wasm`
 * rebuilds it. Each keyed instance owns its own WebAssembly.Instance, so its
 * memory holds only its key schedules and its working buffer, and dispose() can
 * zero that whole memory.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findPackageRoot } from '../package-root.js';
import { XtsBackendUnavailableError, XtsError } from './backend-errors.js';
import type { XtsBackend, XtsKernelInstance } from './kernel.js';

// The lib settings (ES2022 + @types/node 20) declare no WebAssembly types, so the
// small part used here is typed locally and read from globalThis.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
/** An opaque compiled module. */
interface WasmModule {
  readonly __wasmModule?: never;
}
interface WasmApi {
  Module: { new (bytes: Uint8Array): WasmModule; exports(m: WasmModule): Array<{ name: string; kind: string }> };
  Instance: new (m: WasmModule, imports: Record<string, never>) => { readonly exports: unknown };
}

/** The functions native/wasm/xts.c exports. */
interface XtsWasmExports {
  readonly memory: WasmMemory;
  xts_key_ptr(): number;
  xts_buf_ptr(): number;
  xts_buf_size(): number;
  xts_set_key(keyBytes: number): number;
  xts_crypt(encrypt: number, nbytes: number, sectorSize: number, firstTweak: bigint, tweakStep: bigint): number;
  xts_wipe(): void;
}

const WASM_RELATIVE_PATH = join('native', 'wasm', 'xts.wasm');
const REQUIRED_EXPORTS = ['memory', 'xts_key_ptr', 'xts_buf_ptr', 'xts_buf_size', 'xts_set_key', 'xts_crypt', 'xts_wipe'];

/** Where the packaged xts.wasm lives, from the package root. */
function packagedWasmPath(): string {
  const root = findPackageRoot();
  if (root === undefined) throw new XtsBackendUnavailableError('wasm backend: no vhdcrypt package.json above the module; cannot locate xts.wasm');
  return join(root, WASM_RELATIVE_PATH);
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

interface CompiledXts {
  readonly api: WasmApi;
  readonly module: WasmModule;
}

let cached: CompiledXts | undefined;

function compileModule(path: string): CompiledXts {
  const api = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
  if (api === undefined) throw new XtsBackendUnavailableError('wasm backend: this runtime has no WebAssembly');
  let module: WasmModule;
  try {
    module = new api.Module(readFileSync(path));
  } catch (e) {
    // A missing or damaged file, or an engine without WebAssembly SIMD, lands here.
    throw new XtsBackendUnavailableError(`wasm backend: cannot load ${path}: ${reason(e)}`, { cause: e });
  }
  const names = new Set(api.Module.exports(module).map((d) => d.name));
  const missing = REQUIRED_EXPORTS.filter((n) => !names.has(n));
  if (missing.length > 0) {
    throw new XtsBackendUnavailableError(`wasm backend: ${path} lacks exports ${missing.join(', ')}`);
  }
  return { api, module };
}

/** Best-effort wipe when an instance is collected without dispose(); holds the memory, never the instance. */
const wipeOnCollect = new FinalizationRegistry<WasmMemory>((memory) => {
  new Uint8Array(memory.buffer).fill(0);
});

class WasmXtsInstance implements XtsKernelInstance {
  private exports: XtsWasmExports | null;
  private readonly mem: Uint8Array;
  private readonly bufPtr: number;
  private readonly bufSize: number;

  constructor(api: WasmApi, module: WasmModule, key: Uint8Array) {
    let instance: { readonly exports: unknown };
    try {
      instance = new api.Instance(module, {});
    } catch (e) {
      // Each instance needs its own 128 KiB memory; the engine may refuse it.
      throw new XtsBackendUnavailableError(`wasm backend: cannot instantiate xts.wasm: ${reason(e)}`, { cause: e });
    }
    const ex = instance.exports as unknown as XtsWasmExports;
    this.exports = ex;
    // The module never grows its memory, so this view stays valid.
    this.mem = new Uint8Array(ex.memory.buffer);
    this.bufPtr = ex.xts_buf_ptr();
    this.bufSize = ex.xts_buf_size();
    wipeOnCollect.register(this, ex.memory, this);
    // xts_set_key expands both halves and zeroes the key area itself.
    this.mem.set(key, ex.xts_key_ptr());
    if (ex.xts_set_key(key.length) !== 0) {
      this.dispose();
      throw new XtsError('XTS_BAD_KEY', `"key" expected 32 or 64 bytes, got ${key.length}`);
    }
  }

  crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep: number): void {
    const ex = this.exports;
    if (ex === null) throw new XtsError('XTS_DISPOSED', 'this wasm XTS instance was disposed');
    const chunk = Math.floor(this.bufSize / sectorSize) * sectorSize;
    const step = BigInt(tweakStep);
    const work = this.mem.subarray(this.bufPtr, this.bufPtr + this.bufSize);
    const enc = encrypt ? 1 : 0;
    for (let off = 0; off < src.length; off += chunk) {
      const n = Math.min(chunk, src.length - off);
      work.set(src.subarray(off, off + n));
      // Sector number of this chunk: the front guarantees every sector's number stays below 2^64.
      const tweak = firstTweak + BigInt(off / sectorSize) * step;
      if (ex.xts_crypt(enc, n, sectorSize, tweak, step) !== 0) {
        throw new XtsError('XTS_BAD_ARG', `wasm kernel refused a batch of ${n} bytes in ${sectorSize}-byte sectors`);
      }
      dst.set(work.subarray(0, n), off);
    }
    // Plaintext or ciphertext stays in the buffer until the next call or dispose; it is not key material.
  }

  dispose(): void {
    if (this.exports === null) return;
    this.exports.xts_wipe();
    // Zero everything: key schedules, stack spills of round keys and tweaks, the working buffer.
    this.mem.fill(0);
    wipeOnCollect.unregister(this);
    this.exports = null;
  }
}

/**
 * Load the bitsliced WASM backend synchronously; throws XtsBackendUnavailableError if it cannot run here.
 * `wasmPath` overrides the packaged native/wasm/xts.wasm (tests use it to check the failure path).
 */
export function loadWasmBackend(wasmPath?: string): XtsBackend {
  let compiled: CompiledXts;
  if (wasmPath !== undefined) {
    compiled = compileModule(wasmPath);
  } else {
    cached ??= compileModule(packagedWasmPath());
    compiled = cached;
  }
  const { api, module } = compiled;
  return {
    backend: 'wasm',
    kernel: 'wasm-simd-bitsliced',
    create(key: Uint8Array): XtsKernelInstance {
      return new WasmXtsInstance(api, module, key);
    },
  };
}
