/**
 * Bad input: every damaged, hostile or truncated header gets a typed LuksError
 * naming the fault, and read operations never write. Where cryptsetup
 * judges the same bytes, it must refuse them too.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import * as luks from '../src/luks/index.js';
import { LuksError } from '../src/luks/index.js';
import { cryptsetup, dumpField, luks2JsonAt, makeTmp, run, setLuks2Json, writeSecretFile, writeVolume } from './luks-helpers.js';

const tmp = makeTmp('luks-bad');
afterAll(() => tmp.remove());

const CHEAP = { type: 'pbkdf2', iterations: 1000 } as const;
const PASS = { passphrase: 'good' };

async function fails(p: Promise<unknown>, code: string, mentions?: RegExp): Promise<LuksError> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e, `expected ${code}`).toBeInstanceOf(LuksError);
  expect((e as LuksError).code, (e as Error).message).toBe(code);
  if (mentions) expect((e as Error).message).toMatch(mentions);
  return e as LuksError;
}

/** cryptsetup's verdict on a header held in memory. */
function cryptsetupAccepts(bytes: Uint8Array, name: string): boolean {
  const p = tmp.path(`${name}.judge`);
  writeFileSync(p, bytes);
  return run('cryptsetup', ['luksDump', p]).status === 0;
}

function luks2Valid(buf: Uint8Array, at: number): boolean {
  const hdrSize = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(at + 8, false));
  const region = Uint8Array.from(buf.subarray(at, at + hdrSize));
  const stored = Buffer.from(region.subarray(448, 480));
  region.fill(0, 448, 512);
  return createHash('sha256').update(region).digest().equals(stored);
}

let v1: Uint8Array;
let v2: Uint8Array;
let v2Key: Uint8Array;
beforeAll(async () => {
  v1 = (await luks.format(4n << 20n, { version: 1, keyBits: 256, kdf: CHEAP, ...PASS })).header;
  const f2 = await luks.format(4n << 20n, { version: 2, keyBits: 512, sectorSize: 4096, dataOffset: 1n << 20n, kdf: CHEAP, ...PASS });
  v2 = f2.header;
  v2Key = f2.volumeKey;
});

const copy = (b: Uint8Array) => Uint8Array.from(b);
function editJson(buf: Uint8Array, edit: (j: any) => void): Uint8Array {
  const out = copy(buf);
  const j = JSON.parse(luks2JsonAt(out, 0).text);
  edit(j);
  setLuks2Json(out, JSON.stringify(j));
  return out;
}

describe('wrong secrets', () => {
  test('wrong passphrase: an error after trying every keyslot', async () => {
    const h = copy(v1);
    await luks.addKeyslot(h, PASS, { passphrase: 'second' }, { kdf: CHEAP });
    await luks.addKeyslot(h, PASS, { passphrase: 'third' }, { kdf: CHEAP });
    await fails(luks.unlock(h, { passphrase: 'none of them' }), 'LUKS_WRONG_PASSPHRASE', /tried 3 keyslot/);
    expect((await luks.unlock(h, { passphrase: 'third' })).keyslot).toBe(2);
  });

  test('key file larger than cryptsetup accepts, missing key file', async () => {
    const big = tmp.path('big.key');
    writeFileSync(big, new Uint8Array(luks.MAX_KEYFILE_BYTES + 1));
    await fails(luks.unlock(v1, { keyFile: big }), 'LUKS_KEYFILE_TOO_LARGE');
    await expect(luks.unlock(v1, { keyFile: tmp.path('absent') })).rejects.toMatchObject({ code: 'ENOENT' });
  });

  test('a keyslot out of range or inactive', async () => {
    await fails(luks.unlock(v1, PASS, { keyslot: 8 }), 'LUKS_KEYSLOT_OUT_OF_RANGE');
    await fails(luks.unlock(v1, PASS, { keyslot: 3 }), 'LUKS_KEYSLOT_INACTIVE');
    await fails(luks.removeKeyslot(copy(v1), 8), 'LUKS_KEYSLOT_OUT_OF_RANGE');
    await fails(luks.removeKeyslot(copy(v2), 40), 'LUKS_KEYSLOT_OUT_OF_RANGE');
  });
});

describe('damaged LUKS2 header copies', () => {
  test('primary damaged: unlock uses the secondary, repairHeader rewrites the primary', async () => {
    const h = copy(v2);
    h[4096 + 10] ^= 0xff; // inside the primary's JSON area
    expect(luks2Valid(h, 0)).toBe(false);
    const u = await luks.unlock(h, PASS);
    expect(Buffer.from(u.volumeKey).equals(v2Key)).toBe(true);
    expect((await luks.dump(h)).problems).toEqual([expect.stringMatching(/primary.*checksum/)]);
    const r = await luks.repairHeader(h);
    expect(r.repaired).toBe(true);
    expect([luks2Valid(h, 0), luks2Valid(h, 16384)]).toEqual([true, true]);
    expect((await luks.repairHeader(h)).repaired).toBe(false);
    expect(cryptsetupAccepts(h, 'repaired')).toBe(true);
  });

  test('primary magic wiped: found by scanning for the secondary', async () => {
    const h = copy(v2);
    h.fill(0, 0, 4096);
    expect((await luks.unlock(h, PASS)).keyslot).toBe(0);
  });

  test('secondary damaged: the next write repairs it', async () => {
    const h = copy(v2);
    h[16384 + 200] ^= 1;
    expect(luks2Valid(h, 16384)).toBe(false);
    await luks.addToken(h, luks.vaultToken({ keyslot: 0, vault: 'v', secret: 's@1' }));
    expect([luks2Valid(h, 0), luks2Valid(h, 16384)]).toEqual([true, true]);
    expect(cryptsetupAccepts(h, 'write-repaired')).toBe(true);
  });

  test('both copies damaged', async () => {
    const h = copy(v2);
    h[4096 + 10] ^= 0xff;
    h[16384 + 4096 + 10] ^= 0xff;
    expect(cryptsetupAccepts(h, 'both')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BOTH_HEADERS_BAD', /primary.*secondary/);
    await fails(luks.dump(h), 'LUKS_BOTH_HEADERS_BAD');
  });

  test('a stale copy (lower seqid) loses to the newer one', async () => {
    const old = copy(v2);
    const h = copy(v2);
    await luks.addKeyslot(h, PASS, { passphrase: 'newer' }, { kdf: CHEAP });
    h.set(old.subarray(0, 16384), 0); // primary rolled back, secondary newer
    expect((await luks.unlock(h, { passphrase: 'newer' })).keyslot).toBe(1);
    expect((await luks.dump(h)).problems).toEqual([expect.stringMatching(/seqid differs/)]);
  });

  test('metadata sizes the format does not allow', async () => {
    const h = copy(v2);
    for (const at of [0, 16384]) new DataView(h.buffer).setBigUint64(at + 8, 20000n, false);
    expect(cryptsetupAccepts(h, 'hdrsize')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BOTH_HEADERS_BAD', /hdr_size 20000 is not an allowed/);
    await fails(luks.format(4n << 20n, { version: 2, keyBits: 256, kdf: CHEAP, metadataSize: 20000, ...PASS }), 'LUKS_BAD_ARG');
  });
});

describe('hostile JSON metadata', () => {
  test('not JSON', async () => {
    const h = copy(v2);
    setLuks2Json(h, '{"keyslots": {');
    expect(cryptsetupAccepts(h, 'notjson')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_JSON', /not JSON/);
  });

  test('oversized: JSON filling the area with no terminating NUL', async () => {
    const h = copy(v2);
    const { text } = luks2JsonAt(h, 0);
    setLuks2Json(h, text + ' '.repeat(16384));
    expect(cryptsetupAccepts(h, 'oversized')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_JSON', /NUL-terminated/);
  });

  test('json_size disagreeing with hdr_size', async () => {
    const h = editJson(v2, (j) => (j.config.json_size = '28672'));
    expect(cryptsetupAccepts(h, 'jsonsize')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_JSON', /json_size/);
  });

  test('a keyslot area overlapping the binary headers', async () => {
    const h = editJson(v2, (j) => (j.keyslots['0'].area.offset = '4096'));
    expect(cryptsetupAccepts(h, 'ks-hdr')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_LAYOUT', /keyslot 0 area/);
  });

  test('two keyslot areas overlapping each other', async () => {
    const h = editJson(v2, (j) => {
      j.keyslots['1'] = j.keyslots['0'];
      j.digests['0'].keyslots.push('1');
    });
    expect(cryptsetupAccepts(h, 'ks-ks')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_LAYOUT', /overlaps keyslot/);
  });

  test('the data segment overlapping the keyslots area', async () => {
    const h = editJson(v2, (j) => (j.segments['0'].offset = '65536'));
    expect(cryptsetupAccepts(h, 'seg')).toBe(false);
    await fails(luks.unlock(h, PASS), 'LUKS_BAD_LAYOUT', /segment 0/);
  });

  test('a digest naming a keyslot that does not exist, a 64-bit field that is not a string', async () => {
    await fails(luks.unlock(editJson(v2, (j) => j.digests['0'].keyslots.push('7')), PASS), 'LUKS_BAD_JSON', /keyslot 7/);
    await fails(luks.unlock(editJson(v2, (j) => (j.segments['0'].offset = 1048576)), PASS), 'LUKS_BAD_JSON', /segments\.0\.offset/);
    await fails(luks.unlock(editJson(v2, (j) => delete j.config), PASS), 'LUKS_BAD_JSON', /config/);
  });

  test('JSON nested thousands of levels deep in a token: refused on read (cryptsetup too), never a stack overflow on write', async () => {
    const { text } = luks2JsonAt(v2, 0);
    const deep = text.replace('"tokens":{}', `"tokens":{"0":{"type":"x","keyslots":[],"deep":${'['.repeat(5000)}${']'.repeat(5000)}}}`);
    expect(deep).not.toBe(text);
    const h = copy(v2);
    setLuks2Json(h, deep);
    expect(cryptsetupAccepts(h, 'deep')).toBe(false);
    await fails(luks.readVolumeInfo(h), 'LUKS_BAD_JSON', /nested deeper/);
    await fails(luks.removeKeyslot(h, 0, { force: true }), 'LUKS_BAD_JSON', /nested deeper/);
    // A token of ordinary depth is fine; a cyclic or absurdly deep token object given to addToken is a bad token.
    const ok = copy(v2);
    await luks.addToken(ok, { type: 'nested', keyslots: ['0'], a: { b: { c: [[['d']]] } } });
    expect((await luks.listTokens(ok))[0]!.json).toMatchObject({ a: { b: { c: [[['d']]] } } });
    const cyclic: Record<string, unknown> = { type: 'cyclic', keyslots: ['0'] };
    cyclic.self = cyclic;
    await fails(luks.addToken(copy(v2), cyclic as never), 'LUKS_BAD_TOKEN');
    let tower: unknown = 'x';
    for (let i = 0; i < 5000; i++) tower = [tower];
    await fails(luks.addToken(copy(v2), { type: 'tower', keyslots: ['0'], tower: tower as never }), 'LUKS_BAD_TOKEN', /deeper/);
  });

  test('a keyslots area over 128 MiB (a hostile size for the area wiped on removal): refused, by cryptsetup too', async () => {
    const h = editJson(v2, (j) => {
      j.config.keyslots_size = String(1n << 40n);
      j.keyslots['0'].area.size = String(1n << 39n);
      j.segments['0'].offset = String((1n << 40n) + 32768n);
    });
    expect(cryptsetupAccepts(h, 'ks-huge')).toBe(false);
    await fails(luks.readVolumeInfo(h), 'LUKS_BAD_LAYOUT', /keyslots_size/);
    await fails(luks.removeKeyslot(h, 0, { force: true }), 'LUKS_BAD_LAYOUT', /keyslots_size/);
  });

  test('format with a data offset past 128 MiB of keyslots caps the keyslots area as cryptsetup does', async () => {
    const f = await luks.format((129n << 20n) + 4096n, { version: 2, keyBits: 256, sectorSize: 512, dataOffset: 129n << 20n, kdf: CHEAP, ...PASS });
    const d = await luks.dump(f.header);
    expect(d.keyslotsArea).toBe(128 * 1024 * 1024);
    expect((await luks.readVolumeInfo(f.header)).dataOffset).toBe(129n << 20n);
    const p = tmp.path('big-offset.img');
    writeVolume(p, f.header.subarray(0, 2 * 16384 + 1024 * 1024), (129 << 20) + 4096);
    expect(dumpField(cryptsetup('luksDump', p), 'Keyslots area')).toMatch(/^134217728 \[bytes\]/);
    f.volumeKey.fill(0);
  });

  test('a keyslot area past the end of the device', async () => {
    const p = tmp.path('short2.img');
    writeFileSync(p, v2.subarray(0, 2 * 16384 + 8192));
    await fails(luks.unlock(p, PASS), 'LUKS_BAD_LAYOUT', /past the end of the device/);
    const p1 = tmp.path('short1.img');
    writeFileSync(p1, v1.subarray(0, 8192));
    await fails(luks.unlock(p1, PASS), 'LUKS_BAD_LAYOUT', /past the end of the device/);
  });

  test('unknown KDF: refused for that keyslot, dump still works', async () => {
    const h = editJson(v2, (j) => (j.keyslots['0'].kdf = { type: 'scrypt', salt: j.keyslots['0'].kdf.salt }));
    await fails(luks.unlock(h, PASS), 'LUKS_UNKNOWN_KDF', /scrypt/);
    expect(((await luks.dump(h)).keyslots as luks.LuksDump[])[0].pbkdf).toBe('scrypt');
  });

  test('tokens naming missing keyslots, or without a type, are refused', async () => {
    await fails(luks.addToken(copy(v2), { type: 'x', keyslots: ['9'] }), 'LUKS_BAD_TOKEN', /keyslot 9/);
    await fails(luks.addToken(copy(v2), { keyslots: ['0'] }), 'LUKS_BAD_TOKEN');
    await fails(luks.removeToken(copy(v2), 3), 'LUKS_TOKEN_NOT_FOUND');
    await fails(luks.addToken(copy(v1), { type: 'x', keyslots: [] }), 'LUKS_UNSUPPORTED_VERSION_OP');
  });
});

describe('hostile KDF costs are refused before any work', () => {
  test('LUKS1 keyslot asking for 2^32-1 PBKDF2 iterations', async () => {
    const h = copy(v1);
    new DataView(h.buffer).setUint32(208 + 4, 0xffffffff, false);
    await fails(luks.unlock(h, PASS), 'LUKS_KDF_TOO_COSTLY', /4294967295/);
  });

  test('LUKS1 MK digest asking for 2^31 iterations', async () => {
    const h = copy(v1);
    new DataView(h.buffer).setUint32(164, 0x80000000, false);
    await fails(luks.unlock(h, PASS), 'LUKS_KDF_TOO_COSTLY', /MK digest/);
  });

  test('LUKS2 argon2id asking for 2^32-1 KiB, or a million passes, or 1 GiB x 100', async () => {
    const argon = (kdf: object) => editJson(v2, (j) => (j.keyslots['0'].kdf = { type: 'argon2id', salt: j.keyslots['0'].kdf.salt, ...kdf }));
    await fails(luks.unlock(argon({ time: 4, memory: 4294967295, cpus: 4 }), PASS), 'LUKS_KDF_TOO_COSTLY', /memory/);
    await fails(luks.unlock(argon({ time: 1000000, memory: 1024, cpus: 1 }), PASS), 'LUKS_KDF_TOO_COSTLY', /time/);
    await fails(luks.unlock(argon({ time: 100, memory: 1048576, cpus: 4 }), PASS), 'LUKS_KDF_TOO_COSTLY', /memory x time/);
    await fails(luks.unlock(argon({ time: 4, memory: 1024, cpus: 200 }), PASS), 'LUKS_KDF_TOO_COSTLY', /parallelism/);
  });

  test('LUKS2 digest asking for absurd iterations; ceilings are adjustable', async () => {
    const h = editJson(v2, (j) => (j.digests['0'].iterations = 2 ** 40));
    await fails(luks.unlock(h, PASS), 'LUKS_KDF_TOO_COSTLY', /digest 0/);
    await fails(luks.unlock(v2, PASS, { limits: { ...luks.DEFAULT_KDF_LIMITS, maxPbkdf2Iterations: 999 } }), 'LUKS_KDF_TOO_COSTLY');
  });
});

describe('unsupported ciphers are named', () => {
  const pass = writeSecretFile(tmp.path('pw'), 'good');
  for (const [type, cipher] of [['luks1', 'aes-cbc-essiv:sha256'], ['luks2', 'aes-cbc-essiv:sha256'], ['luks1', 'aes-xts-plain'], ['luks2', 'aes-xts-plain']] as const) {
    test(`${type} ${cipher} made by cryptsetup`, async () => {
      const dev = tmp.path(`${type}-${cipher}.img`);
      writeVolume(dev, new Uint8Array(0), 20 << 20);
      cryptsetup('luksFormat', '--type', type, '--cipher', cipher, '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', pass, dev);
      const spec = type === 'luks1' ? cipher.replace(/^aes-/, 'aes-') : cipher;
      const e = await fails(luks.unlock(dev, PASS), 'LUKS_UNSUPPORTED_CIPHER');
      expect(e.message).toContain(JSON.stringify(spec));
      expect((await luks.dump(dev)).version).toBe(type === 'luks1' ? 1 : 2);
    });
  }

  test('serpent and twofish (no kernel support for cryptsetup here: headers edited)', async () => {
    const h1 = copy(v1);
    h1.fill(0, 8, 40);
    h1.set(Buffer.from('serpent'), 8);
    await fails(luks.unlock(h1, PASS), 'LUKS_UNSUPPORTED_CIPHER', /serpent-xts-plain64/);
    const h2 = editJson(v2, (j) => (j.segments['0'].encryption = 'twofish-xts-plain64'));
    await fails(luks.unlock(h2, PASS), 'LUKS_UNSUPPORTED_CIPHER', /twofish-xts-plain64/);
    const h3 = editJson(v2, (j) => (j.keyslots['0'].area.encryption = 'aes-cbc-plain'));
    await fails(luks.unlock(h3, PASS), 'LUKS_UNSUPPORTED_CIPHER', /aes-cbc-plain/);
  });

  test('128-bit and other key sizes', async () => {
    await fails(luks.format(4n << 20n, { version: 2, keyBits: 128 as 256, kdf: CHEAP, ...PASS }), 'LUKS_UNSUPPORTED_CIPHER', /128/);
    const h = copy(v1);
    new DataView(h.buffer).setUint32(108, 48, false);
    await fails(luks.unlock(h, PASS), 'LUKS_UNSUPPORTED_CIPHER', /384-bit/);
  });
});

describe('LUKS1 phdr damage and truncation', () => {
  test('bad magic, bad version, garbage keyslot state, wrong stripes, overlapping areas', async () => {
    const m = (f: (dv: DataView, b: Uint8Array) => void) => {
      const h = copy(v1);
      f(new DataView(h.buffer), h);
      return h;
    };
    await fails(luks.unlock(m((_, b) => (b[0] = 0)), PASS), 'LUKS_BAD_MAGIC');
    await fails(luks.unlock(randomBytes(1 << 20), PASS), 'LUKS_BAD_MAGIC');
    await fails(luks.unlock(m((dv) => dv.setUint16(6, 3, false)), PASS), 'LUKS_BAD_VERSION');
    await fails(luks.unlock(m((dv) => dv.setUint32(208 + 48, 0x12345678, false)), PASS), 'LUKS_BAD_HEADER', /keyslot 1: state/);
    await fails(luks.unlock(m((dv) => dv.setUint32(208 + 44, 3999, false)), PASS), 'LUKS_BAD_HEADER', /stripes 3999/);
    await fails(luks.unlock(m((dv) => dv.setUint32(208 + 40, 1, false)), PASS), 'LUKS_BAD_LAYOUT', /overlaps the header/);
    const two = copy(v1);
    await luks.addKeyslot(two, PASS, { passphrase: 'b' }, { kdf: CHEAP });
    new DataView(two.buffer).setUint32(208 + 48 + 40, 8 + 10, false);
    await fails(luks.unlock(two, PASS), 'LUKS_BAD_LAYOUT', /overlaps keyslot 0/);
    for (const bad of [m((_, b) => (b[0] = 0)), m((dv) => dv.setUint32(208 + 40, 1, false))]) expect(cryptsetupAccepts(bad, 'v1bad')).toBe(false);
  });

  test('truncated devices', async () => {
    for (const [src, cut] of [[v1, 5], [v1, 300], [v2, 10000], [v2, 100]] as const) {
      const p = tmp.path(`cut-${cut}.img`);
      writeFileSync(p, src.subarray(0, cut));
      await fails(luks.unlock(p, PASS), 'LUKS_TRUNCATED');
    }
    // A LUKS2 device cut inside the secondary: the primary still serves, the problem is reported.
    const p = tmp.path('cut-secondary.img');
    writeFileSync(p, v2.subarray(0, 16384 + 100));
    await fails(luks.unlock(p, PASS), 'LUKS_BAD_LAYOUT', /past the end/);
    expect((await luks.dump(p)).problems).toEqual([expect.stringMatching(/secondary/)]);
  });

  test('read operations never write the source', async () => {
    const p = tmp.path('ro.img');
    writeFileSync(p, v2);
    truncateSync(p, 4 << 20);
    const before = createHash('sha256').update(readFileSync(p)).digest('hex');
    await luks.unlock(p, PASS);
    await luks.dump(p);
    await luks.readVolumeInfo(p);
    await fails(luks.unlock(p, { passphrase: 'bad' }), 'LUKS_WRONG_PASSPHRASE');
    expect(createHash('sha256').update(readFileSync(p)).digest('hex')).toBe(before);
  });
});

describe('string fields without their NUL', () => {
  test('can be read but are not written back', async () => {
    const h2 = copy(v2);
    for (const at of [0, 16384]) h2.fill(0x41, at + 24, at + 24 + 48); // label: 48 x "A", no terminator
    const { resealLuks2 } = await import('./luks-helpers.js');
    resealLuks2(h2);
    expect((await luks.dump(h2)).label).toBe('A'.repeat(48));
    await fails(luks.addToken(h2, { type: 'x', keyslots: [] }), 'LUKS_BAD_HEADER', /label/);
    const h1 = copy(v1);
    h1.fill(0x31, 168, 208); // uuid: 40 x "1"
    expect((await luks.unlock(h1, PASS)).keyslot).toBe(0);
    await fails(luks.addKeyslot(h1, PASS, { passphrase: 'x' }, { kdf: CHEAP }), 'LUKS_BAD_HEADER', /uuid/);
  });

  test('an inactive LUKS1 slot pointing into the phdr is not written to', async () => {
    const h = copy(v1);
    new DataView(h.buffer).setUint32(208 + 48 + 40, 0, false); // slot 1 material offset 0
    const before = Buffer.from(h);
    await fails(luks.addKeyslot(h, PASS, { passphrase: 'x' }, { kdf: CHEAP }), 'LUKS_BAD_LAYOUT', /keyslot 1/);
    expect(Buffer.from(h).equals(before)).toBe(true);
  });
});

describe('format arguments', () => {
  test('refused with typed errors', async () => {
    await fails(luks.format(4n << 20n, { version: 1, keyBits: 256, sectorSize: 4096, kdf: CHEAP, ...PASS }), 'LUKS_BAD_ARG');
    await fails(luks.format(4n << 20n, { version: 1, keyBits: 256, kdf: { type: 'argon2id', time: 4, memoryKiB: 1024, parallelism: 1 }, ...PASS }), 'LUKS_BAD_ARG');
    await fails(luks.format(32n << 20n, { version: 2, keyBits: 256, kdf: { type: 'pbkdf2', iterations: 10 }, ...PASS }), 'LUKS_BAD_ARG', /iterations/);
    await fails(luks.format(32n << 20n, { version: 2, keyBits: 256, kdf: { type: 'bcrypt' } as never, ...PASS }), 'LUKS_UNKNOWN_KDF', /bcrypt/);
    await fails(luks.format(32n << 20n, { version: 2, keyBits: 256, kdf: CHEAP, passphrase: 5 } as never), 'LUKS_BAD_ARG', /secret/);
    await fails(luks.format(1n << 20n, { version: 2, keyBits: 256, kdf: CHEAP, ...PASS }), 'LUKS_BAD_ARG', /volume size/);
    await fails(luks.format(4n << 20n, { version: 2, keyBits: 256, dataOffset: 12345n, kdf: CHEAP, ...PASS }), 'LUKS_BAD_ARG', /dataOffset/);
    await fails(luks.format(4n << 20n, { version: 3 as 2, keyBits: 256, kdf: CHEAP, ...PASS }), 'LUKS_BAD_VERSION');
  });
});
