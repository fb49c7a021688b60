/**
 * Anti-forensic splitter of LUKS1 spec §2.4 (also LUKS2's "af": "luks1"):
 * the key is spread over `stripes` blocks joined by a hash diffusion, so that
 * losing any part of the area destroys the key.
 */
import * as nodeCrypto from 'node:crypto';
import { createHash, randomFillSync } from 'node:crypto';
import type { LuksHash } from './kdf.js';
import { nativeAddon } from '../native-addon.js';

type NativeAfMerge = (material: Uint8Array, keyBytes: number, stripes: number, hash: LuksHash) => Uint8Array | null;

/** crypto.hash exists from Node 20.12; older 20.x use createHash. */
const oneShot = (nodeCrypto as { hash?: (alg: string, data: Uint8Array, enc: 'buffer') => Buffer }).hash;
function digest(alg: LuksHash, data: Uint8Array): Buffer {
  return oneShot ? oneShot(alg, data, 'buffer') : createHash(alg).update(data).digest();
}

const DIGEST_BYTES: Record<LuksHash, number> = { sha1: 20, sha256: 32, sha512: 64 };

/** H(be32(i) || block_i) over each digest-sized block, the last one truncated (spec §2.4 "diffuse"). */
function diffuse(buf: Uint8Array, hashName: LuksHash): void {
  const ds = DIGEST_BYTES[hashName];
  const scratch = new Uint8Array(4 + ds);
  const dv = new DataView(scratch.buffer);
  for (let i = 0, off = 0; off < buf.length; i++, off += ds) {
    const len = Math.min(ds, buf.length - off);
    dv.setUint32(0, i, false);
    scratch.set(buf.subarray(off, off + len), 4);
    // One-shot crypto.hash: 2-3x faster than createHash for 8000 tiny inputs per unlock.
    const d = digest(hashName, scratch.subarray(0, 4 + len));
    buf.set(d.subarray(0, len), off);
    d.fill(0);
  }
  scratch.fill(0);
}

function xorInto(dst: Uint8Array, src: Uint8Array): void {
  for (let i = 0; i < dst.length; i++) dst[i]! ^= src[i]!;
}

/** Splits key into key.length*stripes bytes of AF material (caller wipes). */
export function afSplit(key: Uint8Array, stripes: number, hash: LuksHash): Uint8Array {
  const n = key.length;
  const out = new Uint8Array(n * stripes);
  randomFillSync(out.subarray(0, n * (stripes - 1)));
  // The last stripe is the diffusion chain over the random ones, XORed with the key. afMerge computes that chain and
  // XORs the last stripe into it: with the last stripe still zero, it returns the chain itself (natively, when built).
  const d = afMerge(out, n, stripes, hash);
  const last = out.subarray((stripes - 1) * n);
  last.set(d);
  xorInto(last, key);
  d.fill(0);
  return out;
}

/** Recovers the keyBytes-long key from AF material (caller wipes both): natively when the addon is built. */
export function afMerge(material: Uint8Array, keyBytes: number, stripes: number, hash: LuksHash): Uint8Array {
  // Same result, ~15x faster from a cold start (native/af_merge.cc); null means arguments it does not take.
  const native = nativeAddon()?.afMerge as NativeAfMerge | undefined;
  return (typeof native === 'function' ? native(material, keyBytes, stripes, hash) : null) ?? afMergeJs(material, keyBytes, stripes, hash);
}

/** afMerge in JS with node:crypto's hashes (exported for the tests that compare the two). */
export function afMergeJs(material: Uint8Array, keyBytes: number, stripes: number, hash: LuksHash): Uint8Array {
  const d = new Uint8Array(keyBytes);
  for (let i = 0; i < stripes - 1; i++) {
    xorInto(d, material.subarray(i * keyBytes, (i + 1) * keyBytes));
    diffuse(d, hash);
  }
  xorInto(d, material.subarray((stripes - 1) * keyBytes, stripes * keyBytes));
  return d;
}

/** Bytes of AF material rounded up to whole 512-byte sectors (what the keyslot area holds). */
export function afSectorBytes(keyBytes: number, stripes: number): number {
  return Math.ceil((keyBytes * stripes) / 512) * 512;
}
