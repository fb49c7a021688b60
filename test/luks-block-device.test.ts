/** A LUKS volume inside a dynamic VHD, edited through the image API and checked by qemu-img + cryptsetup. */
import { afterAll, expect, test } from 'vitest';
import * as luks from '../src/luks/index.js';
import { createImage, openImage } from '../src/image/index.js';
import { cryptsetup, makeTmp, run, testPassphrase, writeSecretFile } from './luks-helpers.js';

const tmp = makeTmp('luks-dev');
afterAll(() => tmp.remove());

test('format into a dynamic VHD, add a token through the image, cryptsetup reads the raw conversion', async () => {
  const vhd = tmp.path('disk.vhd');
  const size = 24n << 20n;
  const f = await luks.format(size, { version: 2, keyBits: 512, kdf: luks.KDF_RANDOM_SECRET, passphrase: 'in a vhd' });
  const img = await createImage(vhd, { format: 'vhd-dynamic', virtualSize: size });
  try {
    await img.write(0n, f.header);
    const id = await luks.addToken(img, luks.vaultToken({ keyslot: 0, vault: 'vault://local', secret: 'disk@1' }));
    expect(id).toBe(0);
    await img.flush();
  } finally {
    await img.close();
  }
  const ro = await openImage(vhd);
  try {
    const u = await luks.unlock(ro, { passphrase: 'in a vhd' });
    expect(Buffer.from(u.volumeKey).equals(f.volumeKey)).toBe(true);
    expect(u.info.tokens.map((t) => t.type)).toEqual(['vhdcrypt-vault']);
    await expect(luks.addToken(ro, { type: 'x', keyslots: [] })).rejects.toMatchObject({ code: 'LUKS_BAD_ARG' });
  } finally {
    await ro.close();
  }
  const raw = tmp.path('disk.raw');
  const q = run('qemu-img', ['convert', '-f', 'vpc', vhd, '-O', 'raw', raw]);
  expect(q.status, q.stderr).toBe(0);
  expect(cryptsetup('luksDump', raw)).toMatch(/0: vhdcrypt-vault/);
  expect(testPassphrase(raw, writeSecretFile(tmp.path('pass'), 'in a vhd'))).toBe(0);
});
