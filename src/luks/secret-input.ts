/** Turns a passphrase or key file into the bytes a KDF consumes, as cryptsetup does. */
import { open } from 'node:fs/promises';
import { LuksError } from './errors.js';

/** A passphrase (UTF-8 when a string) or a key file whose whole content is the passphrase. */
export type LuksSecret = { readonly passphrase: string | Uint8Array } | { readonly keyFile: string };

/** cryptsetup's default --keyfile-size ceiling: 8192 KiB. */
export const MAX_KEYFILE_BYTES = 8192 * 1024;

/** Passphrase bytes in a buffer the caller must wipe (.fill(0)) after use. */
export async function secretBytes(secret: LuksSecret): Promise<Uint8Array> {
  if (secret !== null && typeof secret === 'object' && 'passphrase' in secret) {
    const p = secret.passphrase;
    // TextEncoder gives a fresh array; Buffer.from(string) would leave a copy in Node's shared allocation pool.
    if (typeof p === 'string') return new TextEncoder().encode(p);
    if (p instanceof Uint8Array) return Uint8Array.from(p);
  } else if (secret !== null && typeof secret === 'object' && 'keyFile' in secret && typeof secret.keyFile === 'string') {
    // cryptsetup reads a key file whole (newlines included) up to its size ceiling.
    const fh = await open(secret.keyFile, 'r');
    try {
      const st = await fh.stat();
      if (st.isFile() && st.size > MAX_KEYFILE_BYTES) {
        throw new LuksError('LUKS_KEYFILE_TOO_LARGE', `key file ${secret.keyFile} is ${st.size} bytes; the ceiling is ${MAX_KEYFILE_BYTES}`);
      }
      // Regular files: their size (+1 to see growth); pipes and devices: up to the ceiling.
      const buf = new Uint8Array(st.isFile() ? Math.min(st.size + 1, MAX_KEYFILE_BYTES + 1) : MAX_KEYFILE_BYTES + 1);
      try {
        let n = 0;
        for (;;) {
          if (n === buf.length) {
            throw new LuksError('LUKS_KEYFILE_TOO_LARGE', `key file ${secret.keyFile} grew while read or exceeds ${MAX_KEYFILE_BYTES} bytes`);
          }
          const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
          if (bytesRead === 0) break;
          n += bytesRead;
          if (n > MAX_KEYFILE_BYTES) {
            throw new LuksError('LUKS_KEYFILE_TOO_LARGE', `key file ${secret.keyFile} is larger than ${MAX_KEYFILE_BYTES} bytes`);
          }
        }
        return buf.slice(0, n); // buf is a plain Uint8Array: slice copies
      } finally {
        buf.fill(0); // on every path, read errors included
      }
    } finally {
      await fh.close();
    }
  }
  throw new LuksError('LUKS_BAD_ARG', 'secret expected { passphrase: string | Uint8Array } or { keyFile: path }');
}
