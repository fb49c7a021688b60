/**
 * BitLocker's sector ciphers, decryption only. Every IV and tweak is derived from the sector's place in the
 * volume, and always from the place the ciphertext is stored (the relocated header sectors keep the IVs of
 * where they lie):
 * - AES-XTS (0x8004, 0x8005): IEEE 1619 with the tweak = byte offset / the volume's sector size (a 4096-byte
 *   sector volume counts 4096-byte units, unlike LUKS2's 512-byte IV units); the native XTS kernel runs it.
 * - AES-CBC (0x8002, 0x8003): IV = AES-ECB_FVEK(le128(byte offset)) ("eboiv").
 * - AES-CBC + Elephant diffuser (0x8000, 0x8001), N. Ferguson, "AES-CBC + Elephant diffuser: A Disk Encryption
 *   Algorithm for Windows Vista" (Microsoft, 2006): CBC as above, then diffuser B and diffuser A undone, then
 *   the sector key XORed in; sector key = AES-ECB_tweakkey(le128(byte offset)) || AES-ECB_tweakkey(the same
 *   block with byte 15 = 0x80), repeated over the sector.
 * node:crypto runs AES-ECB for whole runs of blocks, so CBC costs two ECB calls per run, not one call per sector.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { endianness } from 'node:os';
import { createXts, type BackendChoice, type Xts } from '../crypto/index.js';
import { BitlockerError } from './errors.js';
import type { CipherSpec } from './metadata.js';

export interface SectorCipher {
  readonly mode: CipherSpec['mode'];
  readonly sectorSize: number;
  /** Decrypt whole sectors in place; `byteOffset` is where the first one is stored in the volume. */
  decrypt(data: Uint8Array, byteOffset: bigint): void;
  /** Wipe the key schedules and key copies. */
  dispose(): void;
}

/** le128(byte offset of each sector) for `count` sectors, in one buffer for one ECB call. */
function offsetBlocks(count: number, byteOffset: bigint, sectorSize: number, topByte = 0): Buffer {
  const b = Buffer.alloc(count * 16);
  for (let i = 0; i < count; i++) {
    b.writeBigUInt64LE(byteOffset + BigInt(i * sectorSize), i * 16);
    b[i * 16 + 15] = topByte;
  }
  return b;
}

function ecb(key: Buffer, encrypt: boolean, data: Uint8Array): Buffer {
  const name = `aes-${key.length * 8}-ecb`;
  const c = encrypt ? createCipheriv(name, key, null) : createDecipheriv(name, key, null);
  c.setAutoPadding(false);
  const out = c.update(data);
  c.final();
  return out;
}

function xorInto(dst: Uint8Array, dstAt: number, src: Uint8Array, srcAt: number, n: number): void {
  for (let i = 0; i < n; i++) dst[dstAt + i]! ^= src[srcAt + i]!;
}

/** A 32-bit view of `b` when it is 4-byte aligned (native byte order: little-endian, checked in CbcCipher). */
function words(b: Uint8Array): Uint32Array | null {
  return b.byteOffset % 4 === 0 && b.length % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length / 4) : null;
}

const RA = [9, 0, 13, 0];
const RB = [0, 10, 0, 25];
const rotl = (x: number, r: number): number => (r === 0 ? x : (x << r) | (x >>> (32 - r)));

/**
 * Undo diffuser B (3 cycles), then diffuser A (5 cycles), on one sector of 32-bit little-endian words. The
 * indices wrap around the sector; only the first and last five words of a pass need the wrap, so the loops are
 * split there (the Elephant volumes' whole cost is here).
 */
function undiffuse(d: Uint32Array): void {
  const n = d.length;
  for (let c = 0; c < 3; c++) {
    let i = 0;
    // Rotations by i mod 4: 0, 10, 0, 25.
    for (; i + 4 <= n - 5; i += 4) {
      d[i] = (d[i]! + (d[i + 2]! ^ d[i + 5]!)) >>> 0;
      let x = d[i + 6]!;
      d[i + 1] = (d[i + 1]! + (d[i + 3]! ^ ((x << 10) | (x >>> 22)))) >>> 0;
      d[i + 2] = (d[i + 2]! + (d[i + 4]! ^ d[i + 7]!)) >>> 0;
      x = d[i + 8]!;
      d[i + 3] = (d[i + 3]! + (d[i + 5]! ^ ((x << 25) | (x >>> 7)))) >>> 0;
    }
    for (; i < n; i++) d[i] = (d[i]! + (d[(i + 2) % n]! ^ rotl(d[(i + 5) % n]!, RB[i & 3]!))) >>> 0;
  }
  for (let c = 0; c < 5; c++) {
    let i = 0;
    for (; i < 8; i++) d[i] = (d[i]! + (d[(i - 2 + n) % n]! ^ rotl(d[(i - 5 + n) % n]!, RA[i & 3]!))) >>> 0;
    // Rotations by i mod 4: 9, 0, 13, 0.
    for (; i + 4 <= n; i += 4) {
      let x = d[i - 5]!;
      d[i] = (d[i]! + (d[i - 2]! ^ ((x << 9) | (x >>> 23)))) >>> 0;
      d[i + 1] = (d[i + 1]! + (d[i - 1]! ^ d[i - 4]!)) >>> 0;
      x = d[i - 3]!;
      d[i + 2] = (d[i + 2]! + (d[i]! ^ ((x << 13) | (x >>> 19)))) >>> 0;
      d[i + 3] = (d[i + 3]! + (d[i + 1]! ^ d[i - 2]!)) >>> 0;
    }
    for (; i < n; i++) d[i] = (d[i]! + (d[i - 2]! ^ rotl(d[i - 5]!, RA[i & 3]!))) >>> 0;
  }
}

class CbcCipher implements SectorCipher {
  readonly mode: CipherSpec['mode'];
  private readonly key: Buffer;
  private readonly tweakKey: Buffer | null;
  constructor(
    readonly spec: CipherSpec,
    fvek: Uint8Array,
    readonly sectorSize: number,
  ) {
    this.mode = spec.mode;
    const n = spec.bits / 8;
    this.key = Buffer.from(fvek.subarray(0, n));
    this.tweakKey = spec.mode === 'cbc-elephant' ? Buffer.from(fvek.subarray(n, 2 * n)) : null;
    if (endianness() !== 'LE') throw new BitlockerError('BITLK_UNSUPPORTED_CIPHER', 'BitLocker CBC volumes are decrypted on little-endian machines only');
  }

  decrypt(data: Uint8Array, byteOffset: bigint): void {
    const ss = this.sectorSize;
    const count = data.length / ss;
    const ivs = ecb(this.key, true, offsetBlocks(count, byteOffset, ss));
    const plain = ecb(this.key, false, data);
    // CBC: P_i = D(C_i) xor C_(i-1), the first block of a sector xor its IV; `data` still holds the ciphertext.
    // Word-wise where both buffers allow it (the XOR of every byte is a large share of the cost).
    const p32 = words(plain);
    const c32 = words(data);
    const w = ss / 4;
    for (let s = 0; s < count; s++) {
      const base = s * ss;
      xorInto(plain, base, ivs, s * 16, 16);
      if (p32 !== null && c32 !== null) {
        const pb = base / 4;
        for (let k = 4; k < w; k++) p32[pb + k]! ^= c32[pb + k - 4]!;
      } else xorInto(plain, base + 16, data, base, ss - 16);
    }
    if (this.tweakKey !== null) {
      const k1 = ecb(this.tweakKey, true, offsetBlocks(count, byteOffset, ss));
      const k2 = ecb(this.tweakKey, true, offsetBlocks(count, byteOffset, ss, 0x80));
      const all = p32 ?? new Uint32Array(plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.length));
      const k1w = new Uint32Array(k1.buffer, k1.byteOffset, k1.length / 4);
      const k2w = new Uint32Array(k2.buffer, k2.byteOffset, k2.length / 4);
      for (let s = 0; s < count; s++) {
        const pb = (s * ss) / 4;
        undiffuse(all.subarray(pb, pb + w));
        // The sector key (32 bytes: k1 || k2 of this sector) repeated over the sector.
        const a0 = k1w[4 * s]!, a1 = k1w[4 * s + 1]!, a2 = k1w[4 * s + 2]!, a3 = k1w[4 * s + 3]!;
        const b0 = k2w[4 * s]!, b1 = k2w[4 * s + 1]!, b2 = k2w[4 * s + 2]!, b3 = k2w[4 * s + 3]!;
        for (let k = pb; k < pb + w; k += 8) {
          all[k]! ^= a0;
          all[k + 1]! ^= a1;
          all[k + 2]! ^= a2;
          all[k + 3]! ^= a3;
          all[k + 4]! ^= b0;
          all[k + 5]! ^= b1;
          all[k + 6]! ^= b2;
          all[k + 7]! ^= b3;
        }
      }
      if (p32 === null) {
        plain.set(new Uint8Array(all.buffer));
        all.fill(0);
      }
      k1.fill(0);
      k2.fill(0);
    }
    data.set(plain);
    plain.fill(0);
    ivs.fill(0);
  }

  dispose(): void {
    this.key.fill(0);
    this.tweakKey?.fill(0);
  }
}

class XtsCipher implements SectorCipher {
  readonly mode = 'xts' as const;
  private readonly xts: Xts;
  constructor(
    fvek: Uint8Array,
    readonly sectorSize: number,
    backend: BackendChoice,
  ) {
    this.xts = createXts(fvek, { backend });
  }
  decrypt(data: Uint8Array, byteOffset: bigint): void {
    this.xts.decryptSectors(data, byteOffset / BigInt(this.sectorSize), this.sectorSize);
  }
  dispose(): void {
    this.xts.dispose();
  }
}

/** The cipher of a volume; `fvek` is copied (the caller keeps and wipes its own). */
export function sectorCipher(spec: CipherSpec, fvek: Uint8Array, sectorSize: number, backend: BackendChoice = 'auto'): SectorCipher {
  return spec.mode === 'xts' ? new XtsCipher(fvek, sectorSize, backend) : new CbcCipher(spec, fvek, sectorSize);
}
