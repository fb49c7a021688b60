/**
 * The per-block tags of a chain manifest (version 2, chain-manifest.ts): GMAC, the authentication-only mode of
 * AES-GCM (NIST SP 800-38D, section 3: GCM with the data as additional authenticated data and no plaintext), under
 * AES-256 and a 96-bit IV made of the block's index. Here, below the file jobs, because the crypt workers tag each
 * piece of a fixed output while the batch is still in their cache, and the manifest's reader must compute the same.
 * GHASH runs several times as fast as SHA-256 on these cores (carry-less multiply), and a MAC is all the manifest
 * needs: only the volume key's holder makes or checks one.
 */
import { createCipheriv } from 'node:crypto';
import { nativeAddon } from '../../native-addon.js';

/** The addon's GMAC (native/gmac.h: GHASH by carry-less multiplication, ~18 GB/s per core with VPCLMULQDQ, ~6.5 without; OpenSSL's GMAC ~4.8 here). */
interface NativeGmac {
  gmacKernels(): string[];
  /** Tags (16 bytes each) of `data` in `pieceBytes` pieces, piece k being block firstIndex + k, each over `prefix` (whole 16-byte blocks) first. */
  gmacTags(key: Uint8Array, prefix: Uint8Array | null, data: Uint8Array, pieceBytes: number, firstIndex: number, kernel?: string): Buffer;
}

let gmac: NativeGmac | null | undefined;

/** The addon's GMAC where it is built and this CPU has a kernel for it, else null (node:crypto then). */
export function nativeGmac(): NativeGmac | null {
  if (gmac === undefined) {
    const a = nativeAddon() as Partial<NativeGmac> | null;
    gmac = a !== null && typeof a.gmacTags === 'function' && typeof a.gmacKernels === 'function' && a.gmacKernels().length > 0 ? (a as NativeGmac) : null;
  }
  return gmac;
}

/** The tags in a buffer of 16-byte tags, as hex. */
function hexTags(tags: Buffer): string[] {
  const out: string[] = [];
  for (let o = 0; o < tags.length; o += BLOCK_TAG_BYTES) out.push(tags.toString('hex', o, o + BLOCK_TAG_BYTES));
  return out;
}

/** Bytes of a tag (SP 800-38D 5.2.1.2: the full 128 bits). */
export const BLOCK_TAG_BYTES = 16;

/**
 * The IV of block `index`'s tag: the index as 8 bytes big-endian, then 4 zero bytes. Unique per block under one
 * key, and each manifest has its own key, so no key ever sees one IV with two different data (SP 800-38D 8.2).
 */
function ivOf(index: number): Buffer {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(index), 0);
  return iv;
}

/** The tag (hex) of block `index` whose bytes are `parts`, one after the other, under the 32-byte `key`. */
export function blockTag(key: Uint8Array, index: number, parts: readonly Uint8Array[]): string {
  const last = parts[parts.length - 1];
  const lead = parts.slice(0, -1);
  const native = nativeGmac();
  // The addon takes whole blocks before the data (a VHD block's sector bitmap is whole sectors).
  if (native !== null && last !== undefined && last.length > 0 && lead.every((p) => p.length % 16 === 0)) {
    const prefix = lead.length === 0 ? null : lead.length === 1 ? lead[0]! : Buffer.concat(lead);
    return hexTags(native.gmacTags(key, prefix, last, last.length, index))[0]!;
  }
  const c = createCipheriv('aes-256-gcm', key, ivOf(index));
  // GCM takes its AAD in several calls before any plaintext (OpenSSL carries a partial 16-byte block across them).
  for (const p of parts) c.setAAD(p);
  c.final();
  return c.getAuthTag().toString('hex');
}

/**
 * The tags of `data` cut in `pieceBytes` pieces (the last may be shorter), the first being block `firstIndex`; with
 * `bitmapBytes`, each over that many 0xff bytes before the piece: a dynamic VHD block as its file holds it, its
 * sector bitmap with every sector present, then its data.
 */
export function pieceTags(key: Uint8Array, data: Uint8Array, pieceBytes: number, firstIndex: number, bitmapBytes = 0): string[] {
  const bitmap = bitmapBytes > 0 ? new Uint8Array(bitmapBytes).fill(0xff) : null;
  const native = nativeGmac();
  if (native !== null && bitmapBytes % 16 === 0) return hexTags(native.gmacTags(key, bitmap, data, pieceBytes, firstIndex));
  const out: string[] = [];
  for (let o = 0, i = firstIndex; o < data.length; o += pieceBytes, i++) {
    const piece = data.subarray(o, o + pieceBytes);
    out.push(blockTag(key, i, bitmap !== null ? [bitmap, piece] : [piece]));
  }
  return out;
}

/**
 * What a tag is without its IV's share: for a 96-bit IV, tag = GHASH_H(data, lengths) XOR E_K(IV || 0^31 || 1)
 * (SP 800-38D 7.1, steps 2 and 5-6), so XORing out E_K(J0) of the IV it was made under leaves the GHASH of the data
 * alone, the same whichever block it was made for. verify uses it only to tell a block that holds another block's
 * data (swapped, moved) from one that changed; nothing computed from it leaves the process.
 */
export class TagUnmasker {
  private readonly ecb;

  constructor(key: Uint8Array) {
    this.ecb = createCipheriv('aes-256-ecb', key, null);
    this.ecb.setAutoPadding(false);
  }

  /** The GHASH (hex) within `tag`, made for block `index`. */
  unmask(index: number, tag: string): string | null {
    const t = Buffer.from(tag, 'hex');
    if (t.length !== BLOCK_TAG_BYTES) return null;
    const j0 = Buffer.alloc(16);
    j0.writeBigUInt64BE(BigInt(index), 0);
    j0[15] = 1;
    const mask = this.ecb.update(j0);
    for (let i = 0; i < BLOCK_TAG_BYTES; i++) t[i]! ^= mask[i]!;
    return t.toString('hex');
  }

  /** Release the key schedule (OpenSSL cleanses it). */
  close(): void {
    this.ecb.final();
  }
}
