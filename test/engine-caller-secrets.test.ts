/**
 * The engine never wipes a secret it was given: a caller's passphrase buffer
 * (typed passphrase or key-file bytes) used for two encryptImage calls opens
 * both images, checked by cryptsetup on the LUKS payload qemu-img extracts
 * from the VHD and by our own decrypt, and the buffer is unchanged after every
 * call. Decrypted outputs are created private (0600, or tighter as the source).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, createReadStream, createWriteStream, readFileSync, statSync, writeFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { addImageKeyslot, createDecryptStream, createEncryptStream, decryptImage, encryptImage, unlockImage } from '../src/engine/index.js';
import { openImage } from '../src/image/index.js';
import { PBKDF2_FAST, firstDifference, makeRaw, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';

const MIB = 1 << 20;
let dir: string;
let src: string;
let model: Uint8Array;

beforeAll(() => {
  dir = tempDir('caller-secrets');
  const raw = join(dir, 'src.raw');
  model = makeRaw(raw, 4 * MIB, [[0, 4 * MIB]]);
  src = join(dir, 'src.vhd');
  rawToVhd(raw, src, 'dynamic');
});

afterAll(() => removeDir(dir));

/** cryptsetup's verdict on the LUKS volume inside a VHD, with the secret's exact bytes as its key file. */
function cryptsetupAccepts(vhd: string, secret: Uint8Array, name: string): { status: number | null; stderr: string } {
  const payload = join(dir, `${name}.luks.raw`);
  const conv = spawnSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, payload], { encoding: 'utf8' });
  if (conv.status !== 0) throw new Error(`qemu-img convert: ${conv.stderr}`);
  const keyFile = join(dir, `${name}.key`);
  writeFileSync(keyFile, secret, { mode: 0o600 });
  const r = spawnSync('cryptsetup', ['--batch-mode', 'open', '--test-passphrase', '--key-file', keyFile, payload], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

describe("a caller's secret buffer is never wiped by the engine", () => {
  const cases: Array<[string, () => Uint8Array]> = [
    ['a typed passphrase', () => new TextEncoder().encode('correct horse battery staple')],
    // Key-file bytes: newlines and NULs inside, as a key file's whole content is the secret.
    ['key file bytes', () => Uint8Array.from({ length: 64 }, (_, i) => (i * 53 + 10) & 0xff)],
  ];
  for (const [what, make] of cases) {
    it(`${what}: two encryptImage calls with one buffer, both images open with it (cryptsetup and our decrypt)`, async () => {
      const secret = make();
      const original = Uint8Array.from(secret);
      const tag = what.replace(/\W+/g, '-');
      const images = [join(dir, `${tag}-1.vhd`), join(dir, `${tag}-2.vhd`)];
      for (const img of images) {
        await encryptImage(src, img, { passphrase: secret, kdf: PBKDF2_FAST, threads: 1 });
        expect(Buffer.from(secret).equals(Buffer.from(original)), `buffer after encrypting ${img}`).toBe(true);
      }
      for (const [i, img] of images.entries()) {
        const verdict = cryptsetupAccepts(img, original, `${tag}-${i}`);
        expect(verdict.status, verdict.stderr).toBe(0);
        // The all-zero secret (what a wiped buffer would have sealed) must not open it.
        expect(cryptsetupAccepts(img, new Uint8Array(original.length), `${tag}-${i}-zero`).status).not.toBe(0);

        const dec = join(dir, `${tag}-${i}.dec.raw`);
        await decryptImage(img, dec, { passphrase: secret, threads: 1, outFormat: 'raw' });
        expect(Buffer.from(secret).equals(Buffer.from(original)), 'buffer after decrypt').toBe(true);
        expect(firstDifference(new Uint8Array(readFileSync(dec)), model)).toBe(-1);

        const opened = await openImage(img);
        try {
          const u = await unlockImage(opened, { passphrase: secret });
          u.volumeKey.fill(0);
        } finally {
          await opened.close();
        }
        expect(Buffer.from(secret).equals(Buffer.from(original)), 'buffer after unlockImage').toBe(true);
      }
    });
  }

  it('the stream APIs: two encrypt streams and a decrypt stream with one buffer; both outputs open with it', async () => {
    const secret = new TextEncoder().encode('stream passphrase');
    const original = Uint8Array.from(secret);
    for (const i of [1, 2]) {
      const enc = join(dir, `stream-${i}.vhd`);
      await pipeline(createReadStream(src), createEncryptStream({ passphrase: secret, kdf: PBKDF2_FAST, threads: 1 }), createWriteStream(enc));
      expect(Buffer.from(secret).equals(Buffer.from(original)), 'buffer after the encrypt stream').toBe(true);
      const verdict = cryptsetupAccepts(enc, original, `stream-${i}`);
      expect(verdict.status, verdict.stderr).toBe(0);
      const dec = join(dir, `stream-${i}.dec.vhd`);
      await pipeline(createReadStream(enc), createDecryptStream({ passphrase: secret, threads: 1 }), createWriteStream(dec));
      expect(Buffer.from(secret).equals(Buffer.from(original)), 'buffer after the decrypt stream').toBe(true);
    }
  });

  it('addImageKeyslot leaves both the existing and the new secret buffers as they were, and the new one opens', async () => {
    const existing = new TextEncoder().encode('existing passphrase');
    const added = new TextEncoder().encode('added passphrase');
    const img = join(dir, 'keyslot.vhd');
    await encryptImage(src, img, { passphrase: existing, kdf: PBKDF2_FAST, threads: 1 });
    await addImageKeyslot(img, { passphrase: existing }, { passphrase: added }, { kdf: PBKDF2_FAST });
    expect(new TextDecoder().decode(existing)).toBe('existing passphrase');
    expect(new TextDecoder().decode(added)).toBe('added passphrase');
    expect(cryptsetupAccepts(img, new TextEncoder().encode('added passphrase'), 'keyslot-added').status).toBe(0);
    expect(cryptsetupAccepts(img, new TextEncoder().encode('existing passphrase'), 'keyslot-existing').status).toBe(0);
  });
});

describe('decrypted outputs are private', () => {
  it('decrypt creates its output 0600 under a umask of 022, and keeps a tighter source mode', async () => {
    const pass = 'mode test passphrase'; // a string: this test is about modes only
    const enc = join(dir, 'mode.vhd');
    await encryptImage(src, enc, { passphrase: pass, kdf: PBKDF2_FAST, threads: 1 });
    const previous = process.umask(0o022);
    try {
      for (const outFormat of ['raw', 'vhd-fixed', 'vhd-dynamic'] as const) {
        const dec = join(dir, `mode-${outFormat}.dec`);
        await decryptImage(enc, dec, { passphrase: pass, threads: 1, outFormat });
        expect((statSync(dec).mode & 0o777).toString(8), outFormat).toBe('600');
      }
      chmodSync(enc, 0o400);
      const tight = join(dir, 'mode-tight.dec');
      await decryptImage(enc, tight, { passphrase: pass, threads: 1, outFormat: 'raw' });
      expect((statSync(tight).mode & 0o777).toString(8)).toBe('400');
    } finally {
      process.umask(previous);
      chmodSync(enc, 0o600);
    }
  });
});
