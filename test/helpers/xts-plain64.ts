/** AES-XTS plain64 sector encryption with node:crypto (the independent oracle for our encrypted backing). */
import { createCipheriv, createDecipheriv } from 'node:crypto';

function iv(tweak: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(tweak, 0);
  return b;
}

/** Encrypt or decrypt `data` sector by sector; sector k uses tweak firstTweak + k * step. */
export function xtsPlain64(encrypt: boolean, key: Uint8Array, data: Uint8Array, sectorSize: number, firstTweak = 0n, step = 1n): Buffer {
  const alg = key.length === 64 ? 'aes-256-xts' : 'aes-128-xts';
  const out = Buffer.alloc(data.length);
  for (let at = 0, k = 0n; at < data.length; at += sectorSize, k++) {
    const c = encrypt ? createCipheriv(alg, key, iv(firstTweak + k * step)) : createDecipheriv(alg, key, iv(firstTweak + k * step));
    const part = Buffer.concat([c.update(data.subarray(at, at + sectorSize)), c.final()]);
    part.copy(out, at);
  }
  return out;
}
