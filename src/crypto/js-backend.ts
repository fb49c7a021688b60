/**
 * Pure-JS AES-XTS: @noble/ciphers' AES block function with the XTS tweak logic
 * (IEEE 1619-2018 §5.3) here. The slow last resort and an independent reference
 * for the tests. noble's AES uses lookup tables, so this backend is not hardened
 * against cache-timing observers; the WASM backend is (bitsliced).
 */
import { XtsBackendUnavailableError } from './backend-errors.js';
import type { XtsBackend, XtsKernelInstance } from './kernel.js';
import { requirePackage } from '../package-root.js';

type NobleAes = (typeof import('@noble/ciphers/aes.js'))['unsafe'];
let nobleAes: NobleAes | undefined;

/** noble's AES, loaded on first use: it builds its tables on import, which every
 * worker and CLI start would pay for a backend that runs only when nothing faster does.
 * require() of an ES module is synchronous from Node 20.19 (package.json engines). */
function aesRounds(): NobleAes {
  if (nobleAes === undefined) {
    try {
      nobleAes = requirePackage<typeof import('@noble/ciphers/aes.js')>(import.meta.url, '@noble/ciphers/aes.js').unsafe;
    } catch (e) {
      throw new XtsBackendUnavailableError(`js backend: cannot load @noble/ciphers (Node ${process.versions.node}; needs 20.19 or later)`, { cause: e });
    }
  }
  return nobleAes;
}

const MASK64 = (1n << 64n) - 1n;

function readLE32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

function writeLE32(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = v >>> 24;
}

class JsXtsInstance implements XtsKernelInstance {
  private enc1: Uint32Array;
  private dec1: Uint32Array;
  private enc2: Uint32Array;
  private readonly aes = aesRounds();

  constructor(key: Uint8Array) {
    const aes = this.aes;
    const half = key.length / 2;
    // Copies of the halves (never views: Buffer#slice shares memory) are wiped as soon as the schedules exist.
    const k1 = new Uint8Array(key.subarray(0, half));
    const k2 = new Uint8Array(key.subarray(half));
    this.enc1 = aes.expandKeyLE(k1);
    this.dec1 = aes.expandKeyDecLE(k1);
    this.enc2 = aes.expandKeyLE(k2);
    k1.fill(0);
    k2.fill(0);
  }

  crypt(encrypt: boolean, src: Uint8Array, dst: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep: number): void {
    const aes = this.aes;
    const blockFn = encrypt ? aes.encrypt : aes.decrypt;
    const k1 = encrypt ? this.enc1 : this.dec1;
    const sectors = src.length / sectorSize;
    const step = BigInt(tweakStep);
    for (let s = 0; s < sectors; s++) {
      const n = (firstTweak + BigInt(s) * step) & MASK64;
      // plain64: the tweak block is n as 64-bit LE, zero padded to 16 bytes.
      const lo = Number(n & 0xffffffffn) >>> 0;
      const hi = Number(n >> 32n) >>> 0;
      let { s0: t0, s1: t1, s2: t2, s3: t3 } = aes.encrypt(this.enc2, lo, hi, 0, 0);
      const base = s * sectorSize;
      for (let o = base; o < base + sectorSize; o += 16) {
        const r = blockFn(
          k1,
          (readLE32(src, o) ^ t0) >>> 0,
          (readLE32(src, o + 4) ^ t1) >>> 0,
          (readLE32(src, o + 8) ^ t2) >>> 0,
          (readLE32(src, o + 12) ^ t3) >>> 0,
        );
        writeLE32(dst, o, r.s0 ^ t0);
        writeLE32(dst, o + 4, r.s1 ^ t1);
        writeLE32(dst, o + 8, r.s2 ^ t2);
        writeLE32(dst, o + 12, r.s3 ^ t3);
        // T <- T * alpha in GF(2^128), little-endian words; branch-free reduction by 0x87.
        const carry = t3 >>> 31;
        t3 = ((t3 << 1) | (t2 >>> 31)) >>> 0;
        t2 = ((t2 << 1) | (t1 >>> 31)) >>> 0;
        t1 = ((t1 << 1) | (t0 >>> 31)) >>> 0;
        t0 = ((t0 << 1) ^ (-carry & 0x87)) >>> 0;
      }
    }
  }

  dispose(): void {
    this.enc1.fill(0);
    this.dec1.fill(0);
    this.enc2.fill(0);
  }
}

/** The pure-JS backend ('js', kernel 'noble'). */
export function loadJsBackend(): XtsBackend {
  return { backend: 'js', kernel: 'noble', create: (key) => new JsXtsInstance(key) };
}
