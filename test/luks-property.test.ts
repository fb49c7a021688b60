/**
 * Property: mutate random bytes of valid LUKS1 and LUKS2 headers; unlock, dump
 * and readVolumeInfo each end in a correct result or a typed LuksError (the KDF
 * limits bound what a header can ask for). Seeded (LUKS_PROPERTY_SEED) so a failure can be replayed.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import * as luks from '../src/luks/index.js';
import { LuksError } from '../src/luks/index.js';
import { luks2JsonAt, resealLuks2, setLuks2Json } from './luks-helpers.js';

const SEED = Number(process.env.LUKS_PROPERTY_SEED ?? 0x5eed);
const RUNS = Number(process.env.LUKS_PROPERTY_RUNS ?? 150);
const PASS = { passphrase: 'property' };
// Tight ceilings so no mutated cost field can take long; the mechanism itself is under test too.
const LIMITS: luks.KdfLimits = { maxPbkdf2Iterations: 100_000, maxArgon2MemoryKiB: 16384, maxArgon2Time: 16, maxArgon2Parallelism: 4, maxArgon2Work: 1 << 17, maxUnlockWork: luks.DEFAULT_KDF_LIMITS.maxUnlockWork };

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Base = { name: string; header: Uint8Array; key: Uint8Array; version: 1 | 2 };
const bases: Base[] = [];

beforeAll(async () => {
  const mk = async (name: string, opts: Parameters<typeof luks.format>[1]) => {
    const f = await luks.format(opts.version === 1 ? 4n << 20n : 2n << 20n, opts);
    bases.push({ name, header: f.header, key: Uint8Array.from(f.volumeKey), version: opts.version });
  };
  await mk('luks1-512', { version: 1, keyBits: 512, kdf: { type: 'pbkdf2', iterations: 1000 }, ...PASS });
  await mk('luks2-pbkdf2', { version: 2, keyBits: 256, sectorSize: 4096, dataOffset: 1n << 20n, kdf: { type: 'pbkdf2', hash: 'sha512', iterations: 1000 }, ...PASS });
  await mk('luks2-argon2id', { version: 2, keyBits: 512, sectorSize: 512, dataOffset: 1n << 20n, kdf: { type: 'argon2id', time: 4, memoryKiB: 256, parallelism: 1 }, ...PASS });
});

/** One mutation of a copy of the base; returns the bytes and a description for replay. */
function mutate(b: Base, r: () => number): { bytes: Uint8Array; what: string } {
  const h = Uint8Array.from(b.header);
  const pick = (n: number) => Math.floor(r() * n);
  const strategy = pick(b.version === 1 ? 3 : 5);
  const edits: string[] = [];
  const flip = (lo: number, hi: number, count: number) => {
    for (let i = 0; i < count; i++) {
      const at = lo + pick(hi - lo);
      const v = pick(256);
      edits.push(`${at}=${v}`);
      h[at] = v;
    }
  };
  if (b.version === 1) {
    if (strategy === 0) flip(0, 592, 1 + pick(8)); // phdr bytes
    else if (strategy === 1) {
      // an extreme value in a 32-bit field of the phdr (payloadOffset, keyBytes, iterations, offsets, stripes)
      const fields = [104, 108, 164, 208, 212, 248, 252, 256, 260];
      const at = fields[pick(fields.length)]!;
      const v = [0, 1, 0xffffffff, 0x7fffffff, pick(0x100000)][pick(5)]!;
      new DataView(h.buffer).setUint32(at, v, false);
      edits.push(`u32@${at}=${v}`);
    } else flip(4096, 4096 + 256000, 1 + pick(4)); // key material
    return { bytes: h, what: `${b.name} s${strategy} ${edits.join(',')}` };
  }
  const { text, hdrSize } = luks2JsonAt(h, 0);
  if (strategy === 0) flip(0, 4096, 1 + pick(6)); // primary binary header
  else if (strategy === 1) {
    flip(0, 4096 + text.length, 1 + pick(4));
    flip(hdrSize, hdrSize + 4096 + text.length, 1 + pick(4)); // both copies, checksums left stale
  } else if (strategy === 2 || strategy === 3) {
    // JSON text edited and both copies resealed, so the parser and validator meet it.
    const chars = [...text];
    const alphabet = '0123456789{}[]",:-abcdefz \u0000';
    for (let i = 0, n = 1 + pick(4); i < n; i++) {
      const at = pick(chars.length);
      const c = strategy === 2 ? alphabet[pick(alphabet.length)]! : String.fromCharCode(pick(128));
      edits.push(`json${at}=${JSON.stringify(c)}`);
      chars[at] = c;
    }
    setLuks2Json(h, chars.join(''));
  } else {
    // seqid / hdr_size / hdr_offset of a copy set to extremes, resealed
    const at = [8, 16, 256][pick(3)]! + (pick(2) ? hdrSize : 0);
    const v = [0n, 1n, 0xffffffffffffffffn, 16384n, 4194304n, BigInt(pick(1 << 30))][pick(6)]!;
    new DataView(h.buffer).setBigUint64(at, v, false);
    edits.push(`u64@${at}=${v}`);
    resealLuks2(h, hdrSize);
  }
  return { bytes: h, what: `${b.name} s${strategy} ${edits.join(',')}` };
}

async function outcome(p: Promise<unknown>, what: string, ok: (v: unknown) => void): Promise<string> {
  try {
    ok(await p);
    return 'ok';
  } catch (e) {
    if (!(e instanceof LuksError)) throw new Error(`${what}: untyped ${String(e)}`, { cause: e });
    return e.code;
  }
}

describe('mutated headers', () => {
  for (const name of ['luks1-512', 'luks2-pbkdf2', 'luks2-argon2id']) {
    test(`${name}: every outcome a correct unlock or a typed error`, async () => {
      const b = bases.find((x) => x.name === name)!;
      const r = rng(SEED ^ name.length * 7919);
      const seen = new Map<string, number>();
      const runs = name === 'luks2-argon2id' ? Math.ceil(RUNS / 3) : RUNS;
      for (let i = 0; i < runs; i++) {
        const { bytes, what } = mutate(b, r);
        const tag = `run ${i} (seed ${SEED}): ${what}`;
        const u = await outcome(luks.unlock(bytes, PASS, { limits: LIMITS }), tag, (v) => {
          expect(Buffer.from((v as { volumeKey: Uint8Array }).volumeKey).equals(b.key), `${tag}: wrong key`).toBe(true);
        });
        await outcome(luks.dump(bytes), tag, (v) => expect(() => JSON.stringify(v)).not.toThrow());
        await outcome(luks.readVolumeInfo(bytes), tag, (v) => expect(v).toHaveProperty('dataOffset'));
        seen.set(u, (seen.get(u) ?? 0) + 1);
      }
      // Both kinds of outcome occur: the mutations reach the validators and also leave unlockable headers.
      expect(seen.get('ok') ?? 0).toBeGreaterThan(0);
      expect([...seen.keys()].filter((k) => k !== 'ok').length).toBeGreaterThan(1);
      console.log(name, Object.fromEntries(seen));
    });
  }
});

describe('random and truncated bytes', () => {
  test('every prefix length of valid headers, and random bytes: a result or a typed LuksError', async () => {
    const r = rng(SEED ^ 0xc0ffee);
    const seen = new Set<string>();
    for (const b of bases) {
      const cuts = new Set<number>([0, 1, 6, 7, 8, 591, 592, 4095, 4096, 16383, 16384, 16385, 32768, b.header.length - 1]);
      for (let i = 0; i < 12; i++) cuts.add(Math.floor(r() * b.header.length));
      for (const cut of cuts) {
        const bytes = Uint8Array.from(b.header.subarray(0, cut));
        const tag = `${b.name} cut at ${cut}`;
        seen.add(await outcome(luks.readVolumeInfo(bytes), tag, (v) => expect(v).toHaveProperty('dataOffset')));
        seen.add(await outcome(luks.dump(bytes), tag, (v) => expect(() => JSON.stringify(v)).not.toThrow()));
        await outcome(luks.unlock(bytes, PASS, { limits: LIMITS }), tag, (v) => {
          expect(Buffer.from((v as { volumeKey: Uint8Array }).volumeKey).equals(b.key), `${tag}: wrong key`).toBe(true);
        });
      }
    }
    for (let i = 0; i < 40; i++) {
      const bytes = Uint8Array.from({ length: Math.floor(r() * 40000) }, () => Math.floor(r() * 256));
      // Half of them carry a LUKS magic and version, so the parsers behind it are reached.
      if (i % 2 === 0 && bytes.length >= 8) bytes.set([...luks.LUKS_MAGIC, 0, 1 + (i % 4 === 0 ? 1 : 0)], 0);
      seen.add(await outcome(luks.readVolumeInfo(bytes), `random ${i}`, () => undefined));
      await outcome(luks.unlock(bytes, PASS, { limits: LIMITS }), `random ${i}`, () => undefined);
    }
    expect(seen.has('LUKS_TRUNCATED')).toBe(true);
    expect(seen.has('ok')).toBe(true);
  });
});
