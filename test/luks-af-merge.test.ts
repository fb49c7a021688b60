/**
 * The anti-forensic merge (LUKS1 spec §2.4) has a native path (native/af_merge.cc, OpenSSL's hashes) and a
 * JS path (node:crypto): both must give the same key for every hash, key size and stripe count a header may
 * hold, and invert afSplit. The cryptsetup suites check the merge against headers cryptsetup wrote.
 */
import { describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { afMerge, afMergeJs, afSplit } from '../src/luks/af-splitter.js';
import { nativeAddon } from '../src/native-addon.js';

type NativeAfMerge = (material: Uint8Array, keyBytes: number, stripes: number, hash: string) => Uint8Array | null;
const native = nativeAddon()?.afMerge as NativeAfMerge | undefined;

describe('afMerge', () => {
  test('the addon is built and offers afMerge (CI builds it; without it afMerge is the JS path)', () => {
    expect(typeof native).toBe('function');
  });

  for (const hash of ['sha1', 'sha256', 'sha512'] as const) {
    test(`${hash}: native and JS agree on random material, and both invert afSplit`, () => {
      for (const keyBytes of [16, 32, 48, 64]) {
        for (const stripes of [1, 2, 3, 4000]) {
          const material = randomBytes(keyBytes * stripes);
          const js = afMergeJs(material, keyBytes, stripes, hash);
          const fast = native!(material, keyBytes, stripes, hash);
          expect(fast).not.toBeNull();
          expect(Buffer.from(fast!).equals(Buffer.from(js))).toBe(true);
          const key = randomBytes(keyBytes);
          const split = afSplit(key, stripes, hash);
          expect(Buffer.from(afMerge(split, keyBytes, stripes, hash)).equals(key)).toBe(true);
          expect(Buffer.from(afMergeJs(split, keyBytes, stripes, hash)).equals(key)).toBe(true);
        }
      }
    });
  }

  test('material is read, never written; arguments the native path does not take give null', () => {
    const material = randomBytes(64 * 4000);
    const before = Buffer.from(material);
    afMerge(material, 64, 4000, 'sha256');
    expect(material.equals(before)).toBe(true);
    expect(native!(material, 64, 4000, 'md5')).toBeNull();
    expect(native!(material.subarray(0, 100), 64, 4000, 'sha256')).toBeNull();
    expect(native!(material, 0, 4000, 'sha256')).toBeNull();
    expect(native!(material, 64, 0, 'sha256')).toBeNull();
    expect(native!(material, 64.5, 10, 'sha256')).toBeNull();
    expect((native as unknown as (...a: unknown[]) => unknown)('not bytes', 64, 10, 'sha256')).toBeNull();
  });
});
