/** All-zero detection with memcmp against a shared zero buffer. */
const ZERO_CHUNK = 1 << 20;
const ZEROS = Buffer.alloc(ZERO_CHUNK);

/** A read-only view of `n` zero bytes (n <= 1 MiB); callers must not write into it. */
export function zeroBytes(n: number): Uint8Array {
  if (n <= ZERO_CHUNK) return ZEROS.subarray(0, n);
  return new Uint8Array(n);
}

/** Pieces of zeros totalling `n` bytes, each from the shared buffer. */
export function zeroPieces(n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  while (n > 0) {
    const k = Math.min(n, ZERO_CHUNK);
    out.push(ZEROS.subarray(0, k));
    n -= k;
  }
  return out;
}

/** True when every byte of `data` is zero. */
export function isAllZero(data: Uint8Array): boolean {
  // Ciphertext and most data fail on the first bytes looked at; the comparison below reads all of them (its cost
  // does not depend on where the first difference lies here), so look at a few spread bytes first.
  const n = data.length;
  if (n > 0 && (data[0]! | data[n - 1]! | data[n >>> 1]! | data[n >>> 2]! | data[(3 * n) >>> 2]!) !== 0) return false;
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let o = 0; o < b.length; o += ZERO_CHUNK) {
    const n = Math.min(ZERO_CHUNK, b.length - o);
    if (!b.subarray(o, o + n).equals(ZEROS.subarray(0, n))) return false;
  }
  return true;
}
