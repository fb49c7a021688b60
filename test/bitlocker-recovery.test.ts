/** cryptsetup's BitLocker images opened by their recovery passwords (see bitlocker-images.test.ts). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitlockerVolume, recoveryKey, stretchKey, type Protector } from '../src/bitlocker/index.js';
import { cryptsetupVolumeKey, extractCorpus, fileBytes, sha256Of, type Corpus } from './helpers/bitlk-images.js';

let corpus: Corpus;
beforeAll(() => {
  corpus = extractCorpus();
});
afterAll(() => corpus?.cleanup());

const WITH_RECOVERY = [
  'bitlk-aes-cbc-128', 'bitlk-aes-cbc-256', 'bitlk-aes-xts-128', 'bitlk-aes-xts-256', 'bitlk-aes-cbc-elephant-128',
  'bitlk-aes-cbc-elephant-256', 'bitlk-togo-aes-cbc-128', 'bitlk-togo-aes-xts-128', 'bitlk-aes-xts-128-new-entry',
  'bitlk-aes-xts-128-smart-card', 'bitlk-aes-cbc-128-4k', 'bitlk-aes-xts-128-4k', 'bitlk-aes-xts-128-startup-key',
  'bitlk-aes-xts-128-startup-key-win11', 'bitlk-aes-xts-128-two-recovery', 'bitlk-aes-xts-128-unicode',
  'bitlk-aes-xts-128-first-recovery',
];

/** Opens the volume; hashes it only when asked (the same FVEK decrypts to the same bytes: the password test hashed it). */
async function open(name: string, p: Protector, hash = false): Promise<{ sha: string | null; fvek: string; vmk: string }> {
  const src = fileBytes(corpus.path(name));
  try {
    const v = await BitlockerVolume.open(src, p);
    try {
      return { sha: hash ? await sha256Of(v) : null, fvek: v.fvek.toString('hex'), vmk: v.vmkGuid };
    } finally {
      v.dispose();
    }
  } finally {
    src.close();
  }
}

describe('the key stretching', () => {
  it('the native loop gives what the node:crypto loop gives', async () => {
    const { stretchKeyJs } = await import('../src/bitlocker/keys.js');
    const initial = Buffer.from('8d9e2b6c3f1a4e5d7c0b9a8f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3', 'hex');
    const salt = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    expect(stretchKey(initial, salt).toString('hex')).toBe(stretchKeyJs(initial, salt).toString('hex'));
  });
});

describe('cryptsetup BitLocker images: recovery passwords', () => {
  for (const name of WITH_RECOVERY) {
    it(`${name}: the recovery password opens its VMK, whose FVEK is cryptsetup's`, async () => {
      const c = corpus.images[name]!;
      // Images without a password protector are hashed here (the others in bitlocker-images.test.ts).
      const r = await open(name, { kind: 'recovery-password', recoveryPassword: c.RP! }, !c.PW);
      expect(r.vmk).toBe(c.RP_VMK_GUID);
      if (!c.PW) expect(r.sha).toBe(c.SHA256SUM);
      // cryptsetup takes a recovery password where it takes a password.
      const theirs = cryptsetupVolumeKey(corpus.path(name), c.RP!);
      expect(r.fvek).toBe(theirs);
    });
  }

  it('the second recovery password of two-recovery opens its own VMK', async () => {
    const c = corpus.images['bitlk-aes-xts-128-two-recovery']!;
    const r = await open('bitlk-aes-xts-128-two-recovery', { kind: 'recovery-password', recoveryPassword: c.RP2! });
    expect(r.vmk).toBe(c.RP2_VMK_GUID);
    expect(r.fvek).toBe(cryptsetupVolumeKey(corpus.path('bitlk-aes-xts-128-two-recovery'), c.PW!));
  });

  it('a recovery password failing its group check is refused before any KDF; a wrong valid one is BITLK_WRONG_KEY', async () => {
    const rp = corpus.images['bitlk-aes-xts-128']!.RP!;
    const typo = rp.slice(0, 3) + String((Number(rp[3]) + 1) % 10) + rp.slice(4);
    expect(() => recoveryKey(typo)).toThrow(expect.objectContaining({ code: 'BITLK_BAD_RECOVERY_PASSWORD' }));
    expect(() => recoveryKey('12345')).toThrow(expect.objectContaining({ code: 'BITLK_BAD_RECOVERY_PASSWORD' }));
    expect(recoveryKey(rp.replace(/-/g, '') + '\n')).toEqual(recoveryKey(rp));
    const other = corpus.images['bitlk-aes-xts-256']!.RP!;
    await expect(open('bitlk-aes-xts-128', { kind: 'recovery-password', recoveryPassword: other })).rejects.toMatchObject({ code: 'BITLK_WRONG_KEY' });
  });
});
