/**
 * Payload interop: volumes we encrypt are read by QEMU and nbdkit (LUKS1, what
 * they support); volumes qemu-img and cryptsetup reencrypt produced are
 * decrypted by us byte-exactly.
 */
import { afterAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as luks from '../src/luks/index.js';
import { createXts } from '../src/crypto/index.js';
import { cryptsetup, makeTmp, run, writeSecretFile, writeVolume } from './luks-helpers.js';
import { qemuEncryptLuks1 } from './helpers/qemu-luks.js';

const tmp = makeTmp('luks-payload');
afterAll(() => tmp.remove());

const PAYLOAD = 3 << 20;

/** Encrypts or decrypts a whole segment payload starting at its first byte, one tweak rule for all. */
function cryptPayload(encrypt: boolean, info: luks.LuksVolumeInfo, key: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  const xts = createXts(key);
  try {
    // In 1 MiB batches, each starting at its own tweak, to exercise segmentTweak at offsets other than 0.
    for (let off = 0; off < data.length; off += 1 << 20) {
      const end = Math.min(data.length, off + (1 << 20));
      const t = luks.segmentTweak(info, BigInt(off));
      const run = encrypt ? xts.encryptSectors.bind(xts) : xts.decryptSectors.bind(xts);
      run(data.subarray(off, end), t.firstTweak, info.sectorSize, { out: out.subarray(off, end), tweakStep: t.tweakStep });
    }
  } finally {
    xts.dispose();
  }
  return out;
}

describe('LUKS1 volumes we encrypt', () => {
  for (const keyBits of [256, 512] as const) {
    test(`qemu-img and nbdkit read our ${keyBits}-bit LUKS1 volume`, async () => {
      const pass = `qemu-${keyBits}`;
      const dev = tmp.path(`ours-${keyBits}.luks`);
      const plain = new Uint8Array(randomBytes(PAYLOAD));
      const f = await luks.format(BigInt(2 << 20) + BigInt(PAYLOAD), { version: 1, keyBits, kdf: luks.KDF_RANDOM_SECRET, passphrase: pass });
      const cipher = cryptPayload(true, f.info, f.volumeKey, plain);
      f.volumeKey.fill(0);
      writeVolume(dev, f.header, Number(f.info.dataOffset) + PAYLOAD, { at: Number(f.info.dataOffset), bytes: cipher });

      const viaQemu = tmp.path(`ours-${keyBits}.qemu.raw`);
      const q = run('qemu-img', ['convert', '--object', `secret,id=s,data=${pass}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${dev}`, '-O', 'raw', viaQemu]);
      expect(q.stderr).toBe('');
      expect(q.status).toBe(0);
      expect(Buffer.from(readFileSync(viaQemu)).equals(plain)).toBe(true);

      const viaNbd = tmp.path(`ours-${keyBits}.nbd.raw`);
      const n = run('nbdkit', ['-U', '-', '--filter=luks', 'file', dev, `passphrase=${pass}`, '--run', `nbdcopy "$uri" ${viaNbd}`]);
      expect(n.stderr).toBe('');
      expect(n.status).toBe(0);
      expect(Buffer.from(readFileSync(viaNbd)).equals(plain)).toBe(true);
    });
  }
});

describe('volumes others encrypt, decrypted by us', () => {
  for (const alg of ['aes-256', 'aes-128'] as const) {
    test(`qemu-img convert into a LUKS1 volume (${alg}-xts-plain64)`, async () => {
      const pass = `from qemu ${alg}`;
      const src = tmp.path(`qemu-${alg}.raw`);
      const out = tmp.path(`qemu-${alg}.luks`);
      const plain = randomBytes(PAYLOAD);
      writeFileSync(src, plain);
      qemuEncryptLuks1(src, out, pass, alg === 'aes-256' ? 512 : 256);
      const u = await luks.unlock(out, { passphrase: pass });
      expect([u.info.version, u.info.keyBytes]).toEqual([1, alg === 'aes-256' ? 64 : 32]);
      const img = readFileSync(out);
      const data = cryptPayload(false, u.info, u.volumeKey, img.subarray(Number(u.info.dataOffset), Number(u.info.dataOffset) + PAYLOAD));
      expect(Buffer.from(data).equals(plain)).toBe(true);
    });
  }

  const REDUCE = 32 << 20;
  for (const [sector, keyBits] of [[512, 256], [4096, 512]] as const) {
    test(`cryptsetup reencrypt --encrypt, LUKS2 ${sector}-byte sectors ${keyBits}-bit`, async () => {
      const dev = tmp.path(`re-${sector}.img`);
      const plain = randomBytes(REDUCE + (4 << 20));
      writeFileSync(dev, plain);
      const passFile = writeSecretFile(tmp.path(`re-${sector}.pass`), 'reencrypt me');
      cryptsetup('reencrypt', '--encrypt', '--type', 'luks2', '--force-offline-reencrypt', '--reduce-device-size', String(REDUCE),
        '--sector-size', String(sector), '--key-size', String(keyBits), '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', passFile, dev);
      const u = await luks.unlock(dev, { keyFile: passFile });
      expect([u.info.version, u.info.sectorSize, u.info.keyBytes * 8, u.info.dataSize]).toEqual([2, sector, keyBits, 'dynamic']);
      const img = readFileSync(dev);
      // The device's first size - reduce bytes now sit encrypted at the data offset.
      const kept = plain.length - REDUCE;
      const at = Number(u.info.dataOffset);
      const data = cryptPayload(false, u.info, u.volumeKey, img.subarray(at, at + kept));
      expect(Buffer.from(data).equals(plain.subarray(0, kept))).toBe(true);
    });
  }

  test('segmentTweak honours iv_tweak and counts 512-byte units for 4096-byte sectors', () => {
    const info = { sectorSize: 4096, ivTweak: 100n };
    expect(luks.segmentTweak(info, 8192n)).toEqual({ firstTweak: 116n, tweakStep: 8 });
    expect(luks.segmentTweak({ sectorSize: 512, ivTweak: 0n }, 1024n)).toEqual({ firstTweak: 2n, tweakStep: 1 });
    expect(() => luks.segmentTweak(info, 512n)).toThrow(luks.LuksError);
  });
});
