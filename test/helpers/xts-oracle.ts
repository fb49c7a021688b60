/** node:crypto as the XTS oracle: one createCipheriv per sector, IV = the 16-byte LE tweak (what a Node user does today). */
import { createCipheriv, createDecipheriv } from 'node:crypto';

export function tweakIv(n: bigint): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(n, 0);
  return iv;
}

export function oracleXts(encrypt: boolean, key: Uint8Array, data: Uint8Array, firstTweak: bigint, sectorSize: number, tweakStep = 1): Buffer {
  const algo = key.length === 32 ? 'aes-128-xts' : 'aes-256-xts';
  const out = Buffer.alloc(data.length);
  for (let s = 0; s * sectorSize < data.length; s++) {
    const iv = tweakIv(firstTweak + BigInt(s) * BigInt(tweakStep));
    const c = encrypt ? createCipheriv(algo, key, iv) : createDecipheriv(algo, key, iv);
    const part = c.update(data.subarray(s * sectorSize, (s + 1) * sectorSize));
    part.copy(out, s * sectorSize);
    c.final();
  }
  return out;
}
