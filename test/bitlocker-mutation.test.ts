/**
 * Damaged BitLocker metadata: the volume header and FVE blocks of a real image (cryptsetup's clearkey-only image,
 * which opens without a KDF) mutated in memory, with and without the blocks' CRC-32 fixed up so the parser sees the
 * damage. Every outcome is a typed BITLK_* error or a volume that opens and reads; never a crash, a hang or a huge
 * allocation (the reader's reads are counted and bounded).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32 } from 'node:zlib';
import { BitlockerError, BitlockerVolume, readFveMetadata, type VolumeBytes } from '../src/bitlocker/index.js';
import { extractCorpus, fileBytes, type Corpus } from './helpers/bitlk-images.js';

const IMAGE = 'bitlk-aes-xts-128-clearkey-only';
let corpus: Corpus;
let base: VolumeBytes & { close(): void };
let offsets: bigint[];
beforeAll(async () => {
  corpus = extractCorpus();
  base = fileBytes(corpus.path(IMAGE));
  offsets = [...(await readFveMetadata(base)).metadataOffsets];
});
afterAll(() => {
  base?.close();
  corpus?.cleanup();
});

/** The image with some byte ranges replaced; reads bigger than 16 MiB fail the test (no huge allocation). */
function overlay(patches: Map<bigint, Buffer>): VolumeBytes {
  return {
    size: base.size,
    read: async (o, b) => {
      expect(b.length).toBeLessThanOrEqual(16 << 20);
      await base.read(o, b);
      for (const [at, data] of patches) {
        const from = at > o ? at : o;
        const to = at + BigInt(data.length) < o + BigInt(b.length) ? at + BigInt(data.length) : o + BigInt(b.length);
        if (from < to) b.set(data.subarray(Number(from - at), Number(to - at)), Number(from - o));
      }
    },
  };
}

async function block(at: bigint): Promise<Buffer> {
  const b = Buffer.alloc(64 * 1024);
  await base.read(at, b);
  return b;
}

/** Re-seal a block's CRC-32 (the validation header after the block) so the parser reads what was changed. */
function fixCrc(b: Buffer): void {
  const size = b.readUInt16LE(8) << 4;
  if (size + 8 <= b.length && size > 0) b.writeUInt32LE(crc32(b.subarray(0, size)), size + 4);
}

async function outcome(v: VolumeBytes): Promise<string> {
  try {
    const vol = await BitlockerVolume.open(v, { kind: 'clear-key' });
    try {
      const b = Buffer.alloc(64 * 1024);
      await vol.read(0n, b);
      await vol.read(vol.size - BigInt(b.length), b);
    } finally {
      vol.dispose();
    }
    return 'opened';
  } catch (e) {
    if (e instanceof BitlockerError) return e.code;
    throw e;
  }
}

/** A small deterministic PRNG, so a failure names a reproducible case. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe('mutated BitLocker metadata', () => {
  it('the untouched image opens', async () => {
    expect(await outcome(overlay(new Map()))).toBe('opened');
  });

  it('a damaged first copy is reported and the second is used; all three damaged is BITLK_BAD_METADATA', async () => {
    const b0 = await block(offsets[0]!);
    b0[200]! ^= 0xff;
    const m = await readFveMetadata(overlay(new Map([[offsets[0]!, b0]])));
    expect(m.usedCopy).toBe(1);
    expect(m.damagedCopies).toEqual([{ copy: 0, reason: 'CRC-32 mismatch' }]);
    const all = new Map<bigint, Buffer>();
    for (const o of offsets) {
      const b = await block(o);
      b[0] = 0;
      all.set(o, b);
    }
    expect(await outcome(overlay(all))).toBe('BITLK_BAD_METADATA');
  });

  it('named damage gets named errors', async () => {
    const sector0 = Buffer.alloc(512);
    await base.read(0n, sector0);
    const vista = Buffer.from(sector0);
    vista[1] = 0x52;
    expect(await outcome(overlay(new Map([[0n, vista]])))).toBe('BITLK_UNSUPPORTED_VISTA');
    const ss = Buffer.from(sector0);
    ss.writeUInt16LE(1024, 11);
    expect(await outcome(overlay(new Map([[0n, ss]])))).toBe('BITLK_UNSUPPORTED_SECTOR_SIZE');
    const far = Buffer.from(sector0);
    for (let i = 0; i < 3; i++) far.writeBigUInt64LE(1n << 62n, 176 + 8 * i);
    expect(await outcome(overlay(new Map([[0n, far]])))).toBe('BITLK_BAD_METADATA');
    // Each of these changes the block (CRC re-sealed) in all three copies.
    const each = async (change: (b: Buffer) => void): Promise<string> => {
      const p = new Map<bigint, Buffer>();
      for (const o of offsets) {
        const b = await block(o);
        change(b);
        fixCrc(b);
        p.set(o, b);
      }
      return outcome(overlay(p));
    };
    expect(await each((b) => b.writeUInt16LE(2, 12))).toBe('BITLK_UNSUPPORTED_STATE');
    expect(await each((b) => b.writeUInt16LE(0x8010, 64 + 36))).toBe('BITLK_UNSUPPORTED_CIPHER');
    expect(await each((b) => b.writeUInt32LE(0xffffffff, 64))).toBe('BITLK_BAD_METADATA');
    expect(await each((b) => b.writeUInt16LE(0xffff, 112))).toBe('BITLK_BAD_METADATA');
    expect(await each((b) => b.writeUInt16LE(3, 112))).toBe('BITLK_BAD_METADATA');
    expect(await each((b) => b.writeUInt16LE(1, 10))).toBe('BITLK_UNSUPPORTED_VISTA');
  });

  it('3000 random mutations of the FVE blocks (CRC re-sealed) and of sector 0: typed errors or correct reads', async () => {
    const next = rng(20261204);
    const blocks = await Promise.all(offsets.map((o) => block(o)));
    const sector0 = Buffer.alloc(512);
    await base.read(0n, sector0);
    const seen = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const p = new Map<bigint, Buffer>();
      if (next() < 0.1) {
        const s = Buffer.from(sector0);
        for (let k = 0; k < 1 + next() * 4; k++) s[160 + Math.floor(next() * 56)] = Math.floor(next() * 256);
        p.set(0n, s);
      } else {
        // Mutate the header or the entries area (the first ~1 KiB holds everything the parser reads).
        const b = Buffer.from(blocks[0]!);
        const n = 1 + Math.floor(next() * 6);
        for (let k = 0; k < n; k++) {
          const at = Math.floor(next() * 1024);
          if (next() < 0.5) b[at] = Math.floor(next() * 256);
          else b.writeUInt16LE([0, 1, 7, 8, 0xffff, 0x8000, Math.floor(next() * 65536)][Math.floor(next() * 7)]!, at & ~1);
        }
        fixCrc(b);
        for (const o of offsets) p.set(o, b);
      }
      const r = await outcome(overlay(p));
      seen.set(r, (seen.get(r) ?? 0) + 1);
    }
    // Both kinds of outcome happen, and only typed ones (outcome() rethrows anything else).
    expect(seen.get('opened') ?? 0).toBeGreaterThan(0);
    expect([...seen.keys()].every((k) => k === 'opened' || k.startsWith('BITLK_'))).toBe(true);
  });
});

describe('the CBC and Elephant sector ciphers', () => {
  it('give the same plaintext for a buffer at any alignment (the word-wise path and the byte-wise one)', async () => {
    const { sectorCipher, CIPHERS } = await import('../src/bitlocker/index.js');
    const { randomBytes } = await import('node:crypto');
    for (const method of [0x8000, 0x8001, 0x8002, 0x8003]) {
      for (const ss of [512, 4096]) {
        const key = randomBytes(64);
        const data = randomBytes(3 * ss);
        const aligned = Buffer.from(data);
        const c = sectorCipher(CIPHERS[method]!, key, ss);
        c.decrypt(aligned, 1n << 33n);
        const backing = Buffer.alloc(data.length + 3);
        const odd = backing.subarray(3);
        data.copy(odd);
        c.decrypt(odd, 1n << 33n);
        c.dispose();
        expect([method, ss, odd.equals(aligned)]).toEqual([method, ss, true]);
        expect(aligned.equals(data)).toBe(false);
      }
    }
  });
});
