/**
 * The chain manifest's block tags (src/engine/pool/block-tag.ts) and the addon's GMAC behind them
 * (native/gmac.h): every GHASH kernel this CPU runs, checked against node:crypto's AES-256-GCM with the data as
 * additional authenticated data and no plaintext (OpenSSL's GMAC, which we did not write), over sizes with partial
 * blocks, prefixes, pieces of every kind and indices up to 2^53 - 1; the dispatch against the CPU flags Linux
 * reports; bad input refused with typed errors.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blockTag, nativeGmac, pieceTags } from '../src/engine/pool/block-tag.js';
import { VhdcryptError } from '../src/errors.js';
import { cpuFlags } from './helpers/cpu-flags.js';

/** node:crypto's GMAC of `parts` under `key` with the manifest's IV for block `index` (8 bytes big-endian, 4 zeros). */
function oracleTag(key: Uint8Array, index: number, parts: readonly Uint8Array[]): string {
  const iv = Buffer.alloc(12);
  iv.writeBigUInt64BE(BigInt(index), 0);
  const c = createCipheriv('aes-256-gcm', key, iv);
  for (const p of parts) c.setAAD(p);
  c.final();
  return c.getAuthTag().toString('hex');
}

function oraclePieces(key: Uint8Array, data: Uint8Array, pieceBytes: number, firstIndex: number, prefix: Uint8Array | null): string[] {
  const out: string[] = [];
  for (let o = 0, i = firstIndex; o < data.length; o += pieceBytes, i++) out.push(oracleTag(key, i, prefix ? [prefix, data.subarray(o, o + pieceBytes)] : [data.subarray(o, o + pieceBytes)]));
  return out;
}

/** The GHASH kernels the dispatch must offer, from the CPU flags Linux reports (it hides flags the OS cannot save). */
function expectedKernels(): string[] {
  const flags = cpuFlags();
  if (flags === null) return [];
  const has = (...f: string[]) => f.every((x) => flags.has(x));
  if (!has('aes', 'pclmulqdq', 'sse4_1')) return [];
  return [...(has('vpclmulqdq', 'avx2', 'avx512f', 'avx512bw', 'avx512vl') ? ['vpclmul-avx512'] : []), 'pclmul'];
}

const gmac = nativeGmac();
const kernels = gmac?.gmacKernels() ?? [];

function tagsHex(b: Buffer): string[] {
  return Array.from({ length: b.length / 16 }, (_, i) => b.toString('hex', 16 * i, 16 * i + 16));
}

describe('the addon\'s GMAC', () => {
  it('offers the GHASH kernels the CPU flags allow, best first', () => {
    expect(kernels).toEqual(expectedKernels());
  });

  // [data bytes, piece bytes, prefix bytes]: partial last blocks, pieces shorter than a wide step (16 blocks), one
  // block, a step and one more, the manifest's 2 MiB pieces after a 512-byte sector bitmap.
  const shapes: Array<[number, number, number]> = [
    [1, 16, 0], [15, 16, 0], [16, 16, 0], [17, 64, 0], [255, 255, 16], [256, 256, 0], [272, 272, 0], [4095, 4096, 0],
    [4096, 4096, 512], [12345, 777, 32], [100_000, 4096, 0], [(2 << 20) * 3 + 4096, 2 << 20, 0], [(2 << 20) * 2, 2 << 20, 512],
  ];
  it.each(kernels)('kernel %s: every piece\'s tag is node:crypto\'s AES-256-GCM tag over the prefix and the piece', (kernel) => {
    for (const [len, piece, pre] of shapes) {
      const key = randomBytes(32);
      const data = randomBytes(len);
      const prefix = pre > 0 ? randomBytes(pre) : null;
      const first = Math.floor(Math.random() * 1e9);
      expect(tagsHex(gmac!.gmacTags(key, prefix, data, piece, first, kernel)), `${len}/${piece}/${pre}`).toEqual(oraclePieces(key, data, piece, first, prefix));
    }
    // The largest index JavaScript numbers hold exactly: the IV's eight bytes carry it all.
    const key = randomBytes(32);
    const data = randomBytes(4096);
    expect(tagsHex(gmac!.gmacTags(key, null, data, 4096, Number.MAX_SAFE_INTEGER, kernel))).toEqual([oracleTag(key, Number.MAX_SAFE_INTEGER, [data])]);
  });

  it.each(kernels)('kernel %s: a key from a SharedArrayBuffer at an odd offset, data at an odd offset', (kernel) => {
    const shared = new Uint8Array(new SharedArrayBuffer(40), 3, 32);
    shared.set(randomBytes(32));
    const backing = randomBytes(8193);
    const data = backing.subarray(1);
    expect(tagsHex(gmac!.gmacTags(shared, null, data, 4096, 7, kernel))).toEqual(oraclePieces(Buffer.from(shared), data, 4096, 7, null));
  });

  it('refuses bad input with typed errors, and no data yields no tags', () => {
    if (expectedKernels().length === 0) return;
    expect(gmac).not.toBeNull();
    if (gmac === null) return;
    const key = randomBytes(32);
    const data = randomBytes(64);
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(VhdcryptError);
        return (e as VhdcryptError).code;
      }
      return 'no error';
    };
    expect(code(() => gmac.gmacTags(randomBytes(31), null, data, 16, 0))).toBe('XTS_BAD_KEY');
    expect(code(() => gmac.gmacTags(randomBytes(16), null, data, 16, 0))).toBe('XTS_BAD_KEY');
    expect(code(() => gmac.gmacTags(key, randomBytes(15), data, 16, 0))).toBe('XTS_BAD_ARG');
    for (const piece of [0, -16, 1.5, Number.NaN, 2 ** 33]) expect(code(() => gmac.gmacTags(key, null, data, piece, 0))).toBe('XTS_BAD_ARG');
    for (const first of [-1, 0.5, 2 ** 53, Number.POSITIVE_INFINITY]) expect(code(() => gmac.gmacTags(key, null, data, 16, first))).toBe('XTS_BAD_ARG');
    expect(code(() => (gmac.gmacTags as (...a: unknown[]) => Buffer)(key, null, 'data', 16, 0))).toBe('XTS_BAD_ARG');
    expect(code(() => (gmac.gmacTags as (...a: unknown[]) => Buffer)(key, null, new Uint16Array(8), 16, 0))).toBe('XTS_BAD_ARG');
    expect(code(() => gmac.gmacTags(key, null, data, 16, 0, 'no-such-kernel'))).toBe('XTS_BACKEND_UNAVAILABLE');
    expect(gmac.gmacTags(key, null, new Uint8Array(0), 16, 0).length).toBe(0);
  });
});

describe('block tags', () => {
  it('pieceTags and blockTag give node:crypto\'s tags, on the addon\'s path (whole-block prefixes) and off it (parts not on block boundaries)', () => {
    const key = randomBytes(32);
    const data = randomBytes(3 * 4096 + 512);
    const bitmap = new Uint8Array(512).fill(0xff);
    expect(pieceTags(key, data, 4096, 10)).toEqual(oraclePieces(key, data, 4096, 10, null));
    expect(pieceTags(key, data, 4096, 10, 512)).toEqual(oraclePieces(key, data, 4096, 10, bitmap));
    // A bitmap of 20 bytes is no whole block: node:crypto carries the partial block across the parts.
    expect(pieceTags(key, data, 4096, 3, 20)).toEqual(oraclePieces(key, data, 4096, 3, new Uint8Array(20).fill(0xff)));
    const parts = [randomBytes(512), randomBytes(4096), randomBytes(100)];
    expect(blockTag(key, 5, parts)).toBe(oracleTag(key, 5, parts));
    const odd = [randomBytes(7), randomBytes(4096)];
    expect(blockTag(key, 6, odd)).toBe(oracleTag(key, 6, odd));
    expect(blockTag(key, 8, [new Uint8Array(0)])).toBe(oracleTag(key, 8, [new Uint8Array(0)]));
  });
});
