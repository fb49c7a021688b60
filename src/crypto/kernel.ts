/**
 * The contract between the XTS front (xts.ts) and each backend (native, wasm, js).
 * The front validates every argument (key length and halves, sector size, data and
 * out lengths, tweak range, overlap) before calling a backend, so a backend only
 * does the arithmetic. Native code re-checks lengths anyway without trusting us.
 *
 * Tweak: plain64 as dm-crypt defines it: tweak number n is the 16-byte block holding
 * n as a 64-bit little-endian integer followed by 8 zero bytes (IEEE 1619-2018 §5.1
 * takes the tweak as a 128-bit value; dm-crypt's plain64 fills it so).
 */
export type BackendName = 'native' | 'wasm' | 'js';

/** One keyed XTS instance of a backend. */
export interface XtsKernelInstance {
  /**
   * Encrypt (or decrypt) `src` into `dst` sector by sector. `dst` may be the same
   * view as `src` (in place) but never a partial overlap (the front copies first).
   * src.length === dst.length, a whole non-zero number of sectors; the k-th sector
   * uses tweak number firstTweak + k * tweakStep, which the front guarantees is
   * below 2^64 for every sector.
   */
  crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep: number): void;
  /** Zero the key schedules; the front refuses calls afterwards. */
  dispose(): void;
}

/** A loaded backend: which kernel it runs and how to key it. */
export interface XtsBackend {
  readonly backend: BackendName;
  /** e.g. 'vaes-avx512', 'vaes-avx2', 'aesni', 'wasm-simd-bitsliced', 'noble'. */
  readonly kernel: string;
  /** key is 32 or 64 bytes with unequal halves (checked by the front). The backend copies it. */
  create(key: Uint8Array): XtsKernelInstance;
}
