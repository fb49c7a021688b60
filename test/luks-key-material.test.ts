/**
 * Key material handling: the caller's buffers are never used as scratch space
 * (Buffer#slice/subarray are views, so a "copy" made with them and then wiped
 * would wipe the caller's header), and unlock results are independent copies.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import * as luks from '../src/luks/index.js';

const PASS = { passphrase: 'key material' };
const CHEAP = { type: 'pbkdf2', iterations: 1000 } as const;

const headers: Array<{ name: string; header: Uint8Array; key: Uint8Array }> = [];
beforeAll(async () => {
  for (const version of [1, 2] as const) {
    const f = await luks.format(4n << 20n, { version, keyBits: 512, kdf: CHEAP, ...(version === 2 ? { dataOffset: 1n << 20n } : {}), ...PASS });
    headers.push({ name: `LUKS${version}`, header: f.header, key: Uint8Array.from(f.volumeKey) });
    f.volumeKey.fill(0);
  }
});

describe('a header held in a Node Buffer (as readFile returns it)', () => {
  for (const version of [1, 2]) {
    test(`LUKS${version}: unlock, dump and readVolumeInfo leave its bytes untouched; it unlocks again`, async () => {
      const { header, key } = headers[version - 1]!;
      const buf = Buffer.from(header);
      const before = Buffer.from(header);
      const first = await luks.unlock(buf, PASS);
      expect(Buffer.from(first.volumeKey).equals(key)).toBe(true);
      await luks.dump(buf);
      await luks.readVolumeInfo(buf);
      expect(buf.equals(before)).toBe(true);
      // Wiping the returned key must not touch the header, and a second unlock still works.
      first.volumeKey.fill(0);
      expect(buf.equals(before)).toBe(true);
      const again = await luks.unlock(buf, PASS);
      expect(Buffer.from(again.volumeKey).equals(key)).toBe(true);
    });

    test(`LUKS${version}: a wrong passphrase leaves the Buffer untouched too`, async () => {
      const buf = Buffer.from(headers[version - 1]!.header);
      const before = Buffer.from(buf);
      await expect(luks.unlock(buf, { passphrase: 'wrong' })).rejects.toMatchObject({ code: 'LUKS_WRONG_PASSPHRASE' });
      expect(buf.equals(before)).toBe(true);
    });
  }

  test('a header that is a subarray of a larger Buffer: the bytes around it and in it stay as they were', async () => {
    const { header } = headers[1]!;
    const big = Buffer.alloc(header.length + 8192, 0x5a);
    big.set(header, 4096);
    const before = Buffer.from(big);
    await luks.unlock(big.subarray(4096, 4096 + header.length), PASS);
    expect(big.equals(before)).toBe(true);
  });
});

describe('passphrases given as bytes', () => {
  test("the caller's passphrase bytes are not wiped or changed by unlock, addKeyslot or format", async () => {
    const pass = Buffer.from('bytes passphrase');
    const keep = Buffer.from(pass);
    const f = await luks.format(4n << 20n, { version: 2, keyBits: 256, dataOffset: 1n << 20n, kdf: CHEAP, passphrase: pass });
    expect(pass.equals(keep)).toBe(true);
    const h = Uint8Array.from(f.header);
    await luks.unlock(h, { passphrase: pass });
    expect(pass.equals(keep)).toBe(true);
    await luks.addKeyslot(h, { passphrase: pass }, { passphrase: 'other' }, { kdf: CHEAP });
    expect(pass.equals(keep)).toBe(true);
    expect((await luks.unlock(h, { passphrase: 'other' })).keyslot).toBe(1);
  });
});
