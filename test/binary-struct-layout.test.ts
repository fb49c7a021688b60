/**
 * The one struct DSL under the VHD and LUKS layouts: a value too large for its field is a typed error and the
 * buffer is left as it was (DataView alone keeps the low bits: setUint32(o, 2 ** 32 + 5) writes 5); a short buffer
 * is refused before a field is read; stated offsets and sizes are held to the packed ones. The layouts round-trip
 * byte for byte against headers the real tools wrote (cryptsetup here; qemu-img's VHDs in image-layout.test.ts).
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  StructError,
  ascii,
  bytes,
  cstring,
  defineStruct,
  reserved,
  skip,
  u16be,
  u16le,
  u32be,
  u32le,
  u64be,
  u64le,
  u8,
  utf16be,
  uuid,
} from '../src/binary/index.js';
import { VhdcryptError } from '../src/errors.js';
import { createImage, encodeDynamicHeader, encodeVhdFooter, readDynamicHeader, readVhdFooter } from '../src/image/index.js';
import { LUKS2_MAGIC_SECONDARY, LUKS_MAGIC, LUKS_MAX_HEADER_REGION, readVolumeInfo } from '../src/luks/index.js';
import { LUKS1_PHDR_SIZE, decodeLuks1Header, encodeLuks1Header } from '../src/luks/luks1-header.js';
import { LUKS2_BINARY_HEADER_SIZE, LUKS2_HEADER_LAYOUT, encodeLuks2Copies } from '../src/luks/luks2-binary-header.js';
import { cryptsetup, makeTmp, writeSecretFile, writeVolume } from './luks-helpers.js';

const tmp = makeTmp('struct');
afterAll(() => tmp.remove());
const keyFile = (): string => writeSecretFile(tmp.path('pass'), 'struct layout test');

/** The error `f` throws (fails the test when it returns). */
function thrown(f: () => unknown): VhdcryptError & { field?: string | null } {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(VhdcryptError);
    return e as VhdcryptError;
  }
  throw new Error('expected a throw, the call returned');
}

const ALL = defineStruct('every kind', [
  ['a', u8],
  ['b', u16be],
  ['c', u16le],
  ['d', u32be],
  ['e', u32le],
  ['f', u64be],
  ['g', u64le],
  ['h', bytes(3)],
  ['i', ascii(4)],
  ['j', cstring(4)],
  ['k', uuid],
  ['l', utf16be(6)],
  ['m', reserved(2)],
  ['n', skip(2)],
]);
const VALUE = {
  a: 0xfe,
  b: 0x1234,
  c: 0x1234,
  d: 0x89abcdef,
  e: 0x89abcdef,
  f: 0x0102030405060708n,
  g: 0x0102030405060708n,
  h: Uint8Array.of(9, 8),
  i: 'ab\0\0',
  j: 'xyz',
  k: '00112233-4455-6677-8899-aabbccddeeff',
  l: 'ÄΩ',
};

describe('the struct DSL', () => {
  it('packs fields in order, each integer in its byte order, and decodes what it encoded', () => {
    expect(ALL.size).toBe(1 + 2 + 2 + 4 + 4 + 8 + 8 + 3 + 4 + 4 + 16 + 6 + 2 + 2);
    const buf = new Uint8Array(ALL.size + 3).fill(0xaa);
    ALL.encode(VALUE, buf, 3);
    const dv = new DataView(buf.buffer, 3);
    expect([dv.getUint8(0), dv.getUint16(1, false), dv.getUint16(3, true), dv.getUint32(5, false), dv.getUint32(9, true)]).toEqual([0xfe, 0x1234, 0x1234, 0x89abcdef, 0x89abcdef]);
    expect([dv.getBigUint64(13, false), dv.getBigUint64(21, true)]).toEqual([0x0102030405060708n, 0x0102030405060708n]);
    expect([...buf.subarray(3 + ALL.offsetOf.c, 3 + ALL.offsetOf.c + 2)]).toEqual([0x34, 0x12]); // little-endian: low byte first
    expect([...buf.subarray(3 + ALL.offsetOf.h, 3 + ALL.offsetOf.h + 3)]).toEqual([9, 8, 0]); // short bytes zero-padded
    expect([...buf.subarray(3 + ALL.offsetOf.m, 3 + ALL.offsetOf.m + 2)]).toEqual([0, 0]); // reserved: zeroed
    expect([...buf.subarray(3 + ALL.offsetOf.n, 3 + ALL.offsetOf.n + 2)]).toEqual([0xaa, 0xaa]); // skipped: untouched
    expect([...buf.subarray(0, 3)]).toEqual([0xaa, 0xaa, 0xaa]);
    const back = ALL.decode(buf, 3);
    expect({ ...back, h: [...back.h] }).toEqual({ ...VALUE, h: [9, 8, 0] });
  });

  const overflows: [string, Record<string, unknown>][] = [
    ['u8 256', { a: 256 }],
    ['u16be 65536', { b: 0x10000 }],
    ['u16le 65536', { c: 0x10000 }],
    ['u32be 2^32 + 5', { d: 2 ** 32 + 5 }],
    ['u32le 2^32', { e: 2 ** 32 }],
    ['u32be -1', { d: -1 }],
    ['u64be 2^64', { f: 1n << 64n }],
    ['u64le 2^64 + 7', { g: (1n << 64n) + 7n }],
    ['u64be -1', { f: -1n }],
    ['bytes 4 into 3', { h: Uint8Array.of(1, 2, 3, 4) }],
    ['ascii 5 into 4', { i: 'qemu2' }],
    ['cstring 4 into 4 (no room for the NUL)', { j: 'wxyz' }],
    ['ascii with a character above 0xff', { i: 'a€' }],
    ['cstring with a character above 0xff', { j: '€' }],
    ['utf16be 4 units into 3', { l: 'abcd' }],
  ];
  it.each(overflows)('%s: STRUCT_FIELD_OVERFLOW naming the field, and the buffer untouched', (_what, change) => {
    const buf = new Uint8Array(ALL.size).fill(0x5a);
    const e = thrown(() => ALL.encode({ ...VALUE, ...change } as typeof VALUE, buf));
    expect(e).toBeInstanceOf(StructError);
    expect(e.code).toBe('STRUCT_FIELD_OVERFLOW');
    expect(e.field).toBe(Object.keys(change)[0]);
    expect(e.message).toContain('every kind field');
    expect(buf.every((b) => b === 0x5a)).toBe(true);
  });

  it('a value of the wrong kind is STRUCT_BAD_VALUE, never coerced', () => {
    for (const change of [{ a: 1.5 }, { d: '7' }, { f: 7 }, { h: [1, 2] }, { k: 'not-a-uuid' }, { j: 7 }]) {
      expect(thrown(() => ALL.encode({ ...VALUE, ...change } as unknown as typeof VALUE, new Uint8Array(ALL.size))).code).toBe('STRUCT_BAD_VALUE');
    }
  });

  it('decode and encode refuse a buffer that does not hold the whole structure (STRUCT_TRUNCATED)', () => {
    const buf = new Uint8Array(ALL.size);
    for (const [b, at] of [[buf.subarray(1), 0], [buf, 1], [buf, -1], [buf, 0.5]] as const) {
      expect(thrown(() => ALL.decode(b, at)).code).toBe('STRUCT_TRUNCATED');
      expect(thrown(() => ALL.encode(VALUE, b, at)).code).toBe('STRUCT_TRUNCATED');
    }
  });

  it('a stated offset or size that the packed fields contradict is refused when the layout is defined', () => {
    expect(() => defineStruct('t', [['a', u32be, 0], ['b', u16be, 6]])).toThrow(/field b is stated at offset 6 but packs at 4/);
    expect(() => defineStruct('t', [['a', u32be], ['b', u16be]], { size: 8 })).toThrow(/add up to 6 bytes, the structure is 8/);
    expect(() => defineStruct('t', [['a', u32be], ['a', u16be]])).toThrow(/declared twice/);
    expect(defineStruct('t', [['a', u32be, 0], ['b', u16be, 4]], { size: 6 }).offsetOf).toEqual({ a: 0, b: 4 });
  });
});

describe('the VHD and LUKS encoders refuse what their fields cannot hold (they kept the low bits before)', () => {
  it('VHD footer and dynamic header', async () => {
    const file = tmp.path('d.vhd');
    const img = await createImage(file, { format: 'vhd-dynamic', virtualSize: 8n << 20n });
    await img.close();
    const raw = readFileSync(file);
    const footer = readVhdFooter(raw.subarray(0, 512));
    const header = readDynamicHeader(raw.subarray(512, 1536));
    const cases: [string, () => unknown][] = [
      ['timestamp 2^32 + 5', () => encodeVhdFooter({ ...footer, timestamp: 2 ** 32 + 5 })],
      ['current size 2^64 + 512', () => encodeVhdFooter({ ...footer, currentSize: (1n << 64n) + 512n })],
      ['creator application of 5 characters', () => encodeVhdFooter({ ...footer, creatorApplication: 'qemu2' })],
      ['cylinders 65536', () => encodeVhdFooter({ ...footer, cylinders: 0x10000 })],
      ['parent name of 300 UTF-16 units', () => encodeDynamicHeader({ ...header, parentUnicodeName: 'p'.repeat(300) })],
      ['max table entries 2^32', () => encodeDynamicHeader({ ...header, maxTableEntries: 2 ** 32 })],
      ['locator data offset 2^64', () => encodeDynamicHeader({ ...header, parentLocators: [{ ...header.parentLocators[0]!, platformDataOffset: 1n << 64n }] })],
    ];
    for (const [what, f] of cases) expect([what, thrown(f).code]).toEqual([what, 'STRUCT_FIELD_OVERFLOW']);
    // What fits still round-trips.
    expect(Buffer.from(encodeVhdFooter(footer)).equals(raw.subarray(0, 512))).toBe(true);
    expect(Buffer.from(encodeDynamicHeader(header)).equals(raw.subarray(512, 1536))).toBe(true);
  });

  it('LUKS1 phdr: a keyslot iteration count of 2^32 + 1000 is refused, not written as 1000', () => {
    const dev = tmp.path('l1.img');
    writeVolume(dev, new Uint8Array(0), 4 << 20);
    cryptsetup('luksFormat', '--type', 'luks1', '--pbkdf-force-iterations', '1000', '--key-file', keyFile(), dev);
    const h = decodeLuks1Header(readFileSync(dev).subarray(0, LUKS1_PHDR_SIZE));
    const keyslots = h.keyslots.map((k, i) => (i === 0 ? { ...k, iterations: 2 ** 32 + 1000 } : k));
    const e = thrown(() => encodeLuks1Header({ ...h, keyslots }));
    expect(e.code).toBe('LUKS_BAD_HEADER');
    expect((e.cause as StructError).code).toBe('STRUCT_FIELD_OVERFLOW');
    expect(thrown(() => encodeLuks1Header({ ...h, payloadOffset: -8 })).code).toBe('LUKS_BAD_HEADER');
  });

  it('LUKS2 binary header: a seqid of 2^64 or a label character above 0xff is refused', () => {
    const base = { hdrSize: 16384, seqid: 1n, label: '', uuid: '00112233-4455-6677-8899-aabbccddeeff', subsystem: '' };
    expect(thrown(() => encodeLuks2Copies({ ...base, seqid: 1n << 64n }, '{}')).code).toBe('LUKS_BAD_HEADER');
    expect(thrown(() => encodeLuks2Copies({ ...base, label: 'price €5' }, '{}')).code).toBe('LUKS_BAD_HEADER');
    const ok = encodeLuks2Copies({ ...base, label: 'prix é' }, '{}');
    expect(LUKS2_HEADER_LAYOUT.decode(ok).label).toBe('prix é');
  });
});

describe('LUKS layouts round-trip headers cryptsetup wrote, byte for byte', () => {
  it('LUKS1 phdr and its 8 keyslots', () => {
    const dev = tmp.path('rt1.img');
    writeVolume(dev, new Uint8Array(0), 4 << 20);
    cryptsetup('luksFormat', '--type', 'luks1', '--hash', 'sha512', '--pbkdf-force-iterations', '1000', '--key-file', keyFile(), dev);
    cryptsetup('luksAddKey', '--pbkdf-force-iterations', '1000', '--key-file', keyFile(), '--key-slot', '5', dev, keyFile());
    const phdr = readFileSync(dev).subarray(0, LUKS1_PHDR_SIZE);
    expect(Buffer.from(phdr.subarray(0, 6)).equals(LUKS_MAGIC)).toBe(true);
    const h = decodeLuks1Header(phdr);
    expect([h.hashSpec, h.cipherName, h.cipherMode]).toEqual(['sha512', 'aes', 'xts-plain64']);
    expect(h.keyslots.filter((k) => k.iterations === 1000).map((k) => k.index)).toEqual([0, 5]);
    expect(Buffer.from(encodeLuks1Header(h)).equals(phdr)).toBe(true);
  });

  it('LUKS2 binary header, both copies', () => {
    const dev = tmp.path('rt2.img');
    writeVolume(dev, new Uint8Array(0), 20 << 20);
    cryptsetup('luksFormat', '--type', 'luks2', '--label', 'a label', '--subsystem', 'sub', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', keyFile(), dev);
    const all = readFileSync(dev);
    const primary = LUKS2_HEADER_LAYOUT.decode(all, 0);
    expect([primary.label, primary.subsystem, primary.checksumAlg, primary.hdrOffset]).toEqual(['a label', 'sub', 'sha256', 0n]);
    for (const [at, magic] of [[0, LUKS_MAGIC], [Number(primary.hdrSize), LUKS2_MAGIC_SECONDARY]] as const) {
      const copy = all.subarray(at, at + LUKS2_BINARY_HEADER_SIZE);
      expect(Buffer.from(copy.subarray(0, 6)).equals(magic)).toBe(true);
      const again = new Uint8Array(LUKS2_BINARY_HEADER_SIZE).fill(0xee);
      LUKS2_HEADER_LAYOUT.encode(LUKS2_HEADER_LAYOUT.decode(copy), again);
      expect(Buffer.from(again).equals(copy)).toBe(true);
    }
  });
});

describe('the LUKS header region ceiling', () => {
  it("is cryptsetup's largest layout (4 MiB metadata x 2 + 128 MiB keyslots), which it refuses to exceed", async () => {
    expect(LUKS_MAX_HEADER_REGION).toBe(136n << 20n);
    const dev = tmp.path('largest.img');
    writeVolume(dev, new Uint8Array(0), 140 << 20);
    const cheap = ['--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', keyFile()];
    cryptsetup('luksFormat', ...cheap, '--luks2-metadata-size', '4096k', '--luks2-keyslots-size', '128m', dev);
    expect((await readVolumeInfo(dev)).dataOffset).toBe(LUKS_MAX_HEADER_REGION);
    expect(() => cryptsetup('luksFormat', ...cheap, '--luks2-metadata-size', '4096k', '--luks2-keyslots-size', '132m', dev)).toThrow();
    expect(() => cryptsetup('luksFormat', ...cheap, '--luks2-metadata-size', '8192k', dev)).toThrow();
  });
});
