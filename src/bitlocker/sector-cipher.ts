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

const RA = [9, 0, 13, 0];
const RB = [0, 10, 0, 25];
const rotl = (x: number, r: number): number => (r === 0 ? x : (x << r) | (x >>> (32 - r)));

/** Undo diffuser B (3 cycles), then diffuser A (5 cycles), on one sector of 32-bit little-endian words. */
function undiffuse(d: Uint32Array): void {
  const n = d.length;
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < n; i++) d[i] = (d[i]! + (d[(i + 2) % n]! ^ rotl(d[(i + 5) % n]!, RB[i & 3]!))) >>> 0;
  }
  for (let c = 0; c < 5; c++) {
    for (let i = 0; i < n; i++) d[i] = (d[i]! + (d[(i - 2 + n) % n]! ^ rotl(d[(i - 5 + n) % n]!, RA[i & 3]!))) >>> 0;
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
    if (spec.mode === 'cbc-elephant' && endianness() !== 'LE') throw new BitlockerError('BITLK_UNSUPPORTED_CIPHER', 'the Elephant diffuser is implemented for little-endian machines only');
  }

  decrypt(data: Uint8Array, byteOffset: bigint): void {
    const ss = this.sectorSize;
    const count = data.length / ss;
    const ivs = ecb(this.key, true, offsetBlocks(count, byteOffset, ss));
    const plain = ecb(this.key, false, data);
    // CBC: P_i = D(C_i) xor C_(i-1), the first block of a sector xor its IV; `data` still holds the ciphertext.
    for (let s = 0; s < count; s++) {
      const base = s * ss;
      xorInto(plain, base, ivs, s * 16, 16);
      xorInto(plain, base + 16, data, base, ss - 16);
    }
    if (this.tweakKey !== null) {
      const k1 = ecb(this.tweakKey, true, offsetBlocks(count, byteOffset, ss));
      const k2 = ecb(this.tweakKey, true, offsetBlocks(count, byteOffset, ss, 0x80));
      const words = new Uint32Array(plain.buffer, plain.byteOffset, plain.length / 4);
      for (let s = 0; s < count; s++) {
        const base = s * ss;
        undiffuse(words.subarray(base / 4, (base + ss) / 4));
        for (let at = 0; at < ss; at += 32) {
          xorInto(plain, base + at, k1, s * 16, 16);
          xorInto(plain, base + at + 16, k2, s * 16, 16);
        }
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
