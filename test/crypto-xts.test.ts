/**
 * One XTS suite run against every backend and every native kernel this machine
 * has (availableBackends()): published vectors (NIST CAVP XTSGenAES128/256,
 * IEEE P1619 Annex B; see test/vectors/README.md), node:crypto's aes-xts as
 * the oracle on random keys and data, cross-backend agreement, and misuse.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { availableBackends, createXts, type Xts } from '../src/crypto/index.js';
import { isVhdcryptError } from '../src/errors.js';
import { readCavpXts } from './helpers/cavp.js';
import { oracleXts } from './helpers/xts-oracle.js';

const vectorPath = (name: string) => fileURLToPath(new URL(`./vectors/${name}`, import.meta.url));
const MAX = (1n << 64n) - 1n;

const targets = availableBackends();
const open = (t: { backend: string; kernel: string }, key: Uint8Array): Xts =>
  createXts(key, t.backend === 'native' ? { backend: 'native', kernel: t.kernel } : { backend: t.backend as 'wasm' | 'js' });

test('every backend runs here; auto picks native when the CPU has AES-NI', () => {
  const names = new Set(targets.map((t) => t.backend));
  const cpuHasAes = existsSync('/proc/cpuinfo') && /^flags\s*:.*\baes\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  expect(names).toEqual(new Set(cpuHasAes ? ['native', 'wasm', 'js'] : ['wasm', 'js']));
  expect(createXts(randomBytes(64)).backend).toBe(cpuHasAes ? 'native' : 'wasm');
});

const cavp = [
  ...readCavpXts(vectorPath('XTSGenAES128-dusn.rsp')),
  ...readCavpXts(vectorPath('XTSGenAES256-dusn.rsp')),
].filter((v) => v.bits === 128 || v.bits === 256); // whole power-of-two data units; no ciphertext stealing here

const ieee = JSON.parse(readFileSync(vectorPath('ieee1619.json'), 'utf8')).vectors as Array<{
  name: string; key: string; sector: string; pt: string; ct: string;
}>;

describe.each(targets)('$backend/$kernel', (target) => {
  test('NIST CAVP XTSGenAES128/256 (whole-block data units), both directions', () => {
    expect(cavp.length).toBe(800); // 200 of 128 bits and 200 of 256 bits (AES-128 file), 400 of 256 bits (AES-256 file)
    let ran = 0;
    for (const v of cavp) {
      const xts = open(target, v.key);
      const buf = new Uint8Array(v.pt);
      xts.encryptSectors(buf, v.dusn, buf.length);
      expect(Buffer.from(buf).toString('hex'), `${v.section} COUNT ${v.count} (${v.key.length * 4}-bit key)`).toBe(v.ct.toString('hex'));
      xts.decryptSectors(buf, v.dusn, buf.length);
      expect(Buffer.from(buf).equals(v.pt)).toBe(true);
      xts.dispose();
      ran++;
    }
    expect(ran).toBe(800);
  });

  test('IEEE P1619 Annex B vectors 2-5 and 10; vector 1 (equal key halves) refused', () => {
    for (const v of ieee) {
      const key = Buffer.from(v.key, 'hex');
      if (v.name === 'Vector 1') {
        expect(() => open(target, key)).toThrow(expect.objectContaining({ code: 'XTS_EQUAL_KEY_HALVES' }));
        continue;
      }
      const pt = Buffer.from(v.pt, 'hex');
      const xts = open(target, key);
      const out = new Uint8Array(pt.length);
      xts.encryptSectors(pt, BigInt(v.sector), pt.length, { out });
      expect(Buffer.from(out).toString('hex'), v.name).toBe(v.ct);
      const back = new Uint8Array(pt.length);
      xts.decryptSectors(out, BigInt(v.sector), pt.length, { out: back });
      expect(Buffer.from(back).equals(pt), v.name).toBe(true);
      xts.dispose();
    }
  });

  const cases: Array<[keyLen: number, sectorSize: number, step: number]> = [
    [32, 512, 1], [64, 512, 1], [32, 4096, 1], [64, 4096, 1], [64, 4096, 8], [64, 16, 1], [64, 1024, 3],
  ];
  const starts = (count: number) => [0n, 1n, 0xffff_ff00n, (1n << 32n) - 3n, MAX - BigInt(count - 1) * 8n - 5n];

  test.each(cases)('matches node:crypto: key %i bytes, %i-byte sectors, tweakStep %i', (keyLen, sectorSize, step) => {
    const sectorCounts = sectorSize >= 4096 ? [1, 2, 7, 33, 256] : [1, 3, 8, 17, 64, 2048];
    for (const count of sectorCounts) {
      for (const first of starts(count)) {
        const key = randomBytes(keyLen);
        const pt = randomBytes(count * sectorSize);
        const expected = oracleXts(true, key, pt, first, sectorSize, step);
        const xts = open(target, key);
        const buf = new Uint8Array(pt);
        xts.encryptSectors(buf, first, sectorSize, { tweakStep: step });
        expect(Buffer.from(buf).equals(expected), `count ${count} first ${first}`).toBe(true);
        xts.decryptSectors(buf, first, sectorSize, { tweakStep: step });
        expect(Buffer.from(buf).equals(pt)).toBe(true);
        xts.dispose();
      }
    }
  });

  test('the last sector may use tweak 2^64-1; one more is refused', () => {
    const key = randomBytes(64);
    const pt = randomBytes(4 * 512);
    const xts = open(target, key);
    const buf = new Uint8Array(pt);
    xts.encryptSectors(buf, MAX - 3n, 512);
    expect(Buffer.from(buf).equals(oracleXts(true, key, pt, MAX - 3n, 512))).toBe(true);
    expect(() => xts.encryptSectors(new Uint8Array(pt), MAX - 2n, 512)).toThrow(expect.objectContaining({ code: 'XTS_TWEAK_OVERFLOW' }));
    expect(() => xts.encryptSectors(new Uint8Array(512), MAX + 1n, 512)).toThrow(expect.objectContaining({ code: 'XTS_TWEAK_OVERFLOW' }));
    expect(() => xts.encryptSectors(new Uint8Array(1024), MAX - 7n, 512, { tweakStep: 8 })).toThrow(expect.objectContaining({ code: 'XTS_TWEAK_OVERFLOW' }));
    xts.dispose();
  });

  test('odd byte offsets inside larger buffers, out of place, bytes around untouched', () => {
    const key = randomBytes(64);
    const pt = randomBytes(9 * 512);
    const expected = oracleXts(true, key, pt, 77n, 512);
    const xts = open(target, key);
    for (const offset of [1, 3, 7, 13]) {
      const big = new Uint8Array(new SharedArrayBuffer(pt.length + 64));
      const guard = randomBytes(big.length);
      big.set(guard);
      const src = big.subarray(offset, offset + pt.length);
      src.set(pt);
      const outBig = new Uint8Array(pt.length + 40).fill(0xa5);
      const out = outBig.subarray(offset + 2, offset + 2 + pt.length);
      xts.encryptSectors(src, 77n, 512, { out });
      expect(Buffer.from(out).equals(expected)).toBe(true);
      expect(Buffer.from(src).equals(pt)).toBe(true); // the source is not written out of place
      expect(outBig.subarray(0, offset + 2).every((b) => b === 0xa5)).toBe(true);
      expect(outBig.subarray(offset + 2 + pt.length).every((b) => b === 0xa5)).toBe(true);
      // in place at the odd offset
      xts.encryptSectors(src, 77n, 512);
      expect(Buffer.from(src).equals(expected)).toBe(true);
      expect(Buffer.from(big.subarray(0, offset)).equals(guard.subarray(0, offset))).toBe(true);
      expect(Buffer.from(big.subarray(offset + pt.length)).equals(guard.subarray(offset + pt.length))).toBe(true);
    }
    xts.dispose();
  });

  test('partially overlapping in and out give the same result as separate buffers', () => {
    const key = randomBytes(32);
    const pt = randomBytes(8 * 512);
    const expected = oracleXts(true, key, pt, 5n, 512);
    const xts = open(target, key);
    for (const shift of [-512, -16, 16, 512]) {
      const buf = new Uint8Array(pt.length + 1024);
      const srcAt = 512;
      buf.set(pt, srcAt);
      const src = buf.subarray(srcAt, srcAt + pt.length);
      const out = buf.subarray(srcAt + shift, srcAt + shift + pt.length);
      xts.encryptSectors(src, 5n, 512, { out });
      expect(Buffer.from(out).equals(expected), `shift ${shift}`).toBe(true);
    }
    xts.dispose();
  });

  test('misuse: each a typed error with a stable code', () => {
    const codeOf = (f: () => unknown): string | undefined => {
      try {
        f();
      } catch (e) {
        expect(isVhdcryptError(e)).toBe(true);
        return (e as { code: string }).code;
      }
      return undefined;
    };
    expect(codeOf(() => open(target, randomBytes(48)))).toBe('XTS_BAD_KEY');
    expect(codeOf(() => open(target, randomBytes(16)))).toBe('XTS_BAD_KEY');
    const half = randomBytes(32);
    expect(codeOf(() => open(target, Buffer.concat([half, half])))).toBe('XTS_EQUAL_KEY_HALVES');
    const xts = open(target, randomBytes(64));
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(1000), 0n, 512))).toBe('XTS_BAD_LENGTH');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(1536), 0n, 768))).toBe('XTS_BAD_SECTOR_SIZE');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(8192), 0n, 8192))).toBe('XTS_BAD_SECTOR_SIZE');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(8), 0n, 8))).toBe('XTS_BAD_SECTOR_SIZE');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(512), -1n, 512))).toBe('XTS_TWEAK_OVERFLOW');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(512), 0n, 512, { tweakStep: 0 }))).toBe('XTS_BAD_ARG');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(512), 0n, 512, { out: new Uint8Array(511) }))).toBe('XTS_BAD_LENGTH');
    expect(codeOf(() => xts.encryptSectors('nope' as unknown as Uint8Array, 0n, 512))).toBe('XTS_BAD_ARG');
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(512), 0 as unknown as bigint, 512))).toBe('XTS_TWEAK_OVERFLOW');
    xts.dispose();
    expect(codeOf(() => xts.encryptSectors(new Uint8Array(512), 0n, 512))).toBe('XTS_DISPOSED');
    expect(codeOf(() => xts.decryptSectors(new Uint8Array(512), 0n, 512))).toBe('XTS_DISPOSED');
    xts.dispose(); // twice is harmless
  });

  test('the caller keeps its key: createXts copies it and never writes it', () => {
    const key = randomBytes(64);
    const copy = Buffer.from(key);
    const xts = open(target, key);
    xts.dispose();
    expect(key.equals(copy)).toBe(true);
  });
});

test('backends and kernels agree with each other on random batches (property test)', () => {
  for (let round = 0; round < 40; round++) {
    const keyLen = round % 2 ? 64 : 32;
    const sectorSize = [16, 32, 512, 1024, 4096][round % 5]!;
    const count = 1 + Math.floor(Math.random() * (sectorSize >= 4096 ? 20 : 80));
    const step = 1 + Math.floor(Math.random() * 9);
    const first = BigInt.asUintN(64, BigInt('0x' + randomBytes(8).toString('hex'))) >> BigInt(Math.floor(Math.random() * 64));
    const firstTweak = first > MAX - BigInt(count * step) ? first - BigInt(count * step) : first;
    const key = randomBytes(keyLen);
    const pt = randomBytes(count * sectorSize);
    const results = targets.map((t) => {
      const xts = open(t, key);
      const buf = new Uint8Array(pt);
      xts.encryptSectors(buf, firstTweak, sectorSize, { tweakStep: step });
      xts.dispose();
      return Buffer.from(buf).toString('hex');
    });
    expect(new Set(results).size, `round ${round}: ${targets.map((t) => t.kernel).join(',')}`).toBe(1);
  }
});

test("'auto' prefers native; an explicit backend runs that backend and says which kernel", () => {
  const key = randomBytes(64);
  for (const b of ['native', 'wasm', 'js'] as const) {
    const xts = createXts(key, { backend: b });
    expect(xts.backend).toBe(b);
    expect(typeof xts.kernel).toBe('string');
    xts.dispose();
  }
  expect(() => createXts(key, { backend: 'gpu' as 'js' })).toThrow(expect.objectContaining({ code: 'XTS_BAD_ARG' }));
  expect(() => createXts(key, { backend: 'js', kernel: 'aesni' })).toThrow(expect.objectContaining({ code: 'XTS_BAD_ARG' }));
});
