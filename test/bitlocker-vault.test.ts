/**
 * Azure Disk Encryption's BitLocker secrets in the embedded vault: a "BEK" secret (the .BEK file in base64) and a
 * "Wrapped BEK" (the .BEK wrapped by an RSA KEK with RSA-OAEP, the KEK named in the DiskEncryptionKeyEncryptionKeyURL
 * tag) open the startup-key image through `vhdcrypt decrypt --vault ... --secret ID`; other secrets are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openVault } from '../src/vault/index.js';
import { extractCorpus, type Corpus } from './helpers/bitlk-images.js';

const CLI = join(import.meta.dirname, '..', 'bin', 'vhdcrypt.cjs');
const NAME = 'bitlk-aes-xts-128-startup-key';
let corpus: Corpus;
let vaultUri: string;
const ids: Record<string, string> = {};

beforeAll(async () => {
  corpus = extractCorpus();
  vaultUri = `file:${join(corpus.dir, 'vault')}`;
  const v = await openVault(vaultUri, { create: true });
  try {
    const bek = readFileSync(join(corpus.dir, `${corpus.images[NAME]!.SK_VMK_GUID!.toUpperCase()}.BEK`));
    ids.plain = (await v.setSecret('bek-plain', bek.toString('base64'), { contentType: 'BEK' })).id;
    const kek = await v.createKey('ade-kek', { kty: 'RSA', size: 2048 });
    const wrapped = await v.wrapKey('ade-kek', 'RSA-OAEP', bek);
    ids.wrapped = (
      await v.setSecret('bek-wrapped', Buffer.from(wrapped.result).toString('base64'), {
        contentType: 'Wrapped BEK',
        tags: { DiskEncryptionKeyEncryptionKeyURL: kek.properties.id, DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyFileName: 'x.BEK' },
      })
    ).id;
    ids.other = (await v.setSecret('not-a-bek', 'hello', { contentType: 'text/plain' })).id;
  } finally {
    await v.close();
  }
});
afterAll(() => corpus?.cleanup());

function decrypt(secret: string, out: string) {
  return spawnSync(process.execPath, [CLI, 'decrypt', corpus.path(NAME), join(corpus.dir, out), '--vault', vaultUri, '--secret', secret, '--json'], { encoding: 'utf8' });
}

describe('BitLocker keys from the vault', () => {
  for (const kind of ['plain', 'wrapped'] as const) {
    it(`a ${kind === 'plain' ? 'BEK' : 'Wrapped BEK'} secret opens the volume`, () => {
      const r = decrypt(ids[kind]!, `${kind}.img`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout).volumes[0].vmkGuid).toBe(corpus.images[NAME]!.SK_VMK_GUID);
      expect(createHash('sha256').update(readFileSync(join(corpus.dir, `${kind}.img`))).digest('hex')).toBe(corpus.images[NAME]!.SHA256SUM);
    });
  }

  it('--to-luks: the Wrapped BEK opens the BitLocker volume and the disk comes out as LUKS2 under a new vault key, which decrypts to the volume', () => {
    const out = join(corpus.dir, 'migrated.img');
    const r = spawnSync(process.execPath, [CLI, 'decrypt', corpus.path(NAME), out, '--vault', vaultUri, '--secret', ids.wrapped!, '--to-luks', '--json'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(m.luks.format).toBe('luks2');
    expect(m.luks.secretId).toMatch(/\/secrets\//);
    expect(readFileSync(out).subarray(0, 6).toString('latin1')).toBe('LUKS\xba\xbe');
    expect(spawnSync('ls', ['-a', corpus.dir], { encoding: 'utf8' }).stdout).not.toContain('bitlk-plain');
    const back = join(corpus.dir, 'back.img');
    const d = spawnSync(process.execPath, [CLI, 'decrypt', out, back, '--vault', vaultUri], { encoding: 'utf8' });
    expect(d.stderr).toBe('');
    expect(d.status).toBe(0);
    expect(createHash('sha256').update(readFileSync(back)).digest('hex')).toBe(corpus.images[NAME]!.SHA256SUM);
  });

  it('a secret that is not a BEK is BITLK_NOT_A_BEK_SECRET (exit 5); a missing one the vault\'s error', () => {
    const r = decrypt(ids.other!, 'other.img');
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/^vhdcrypt: BITLK_NOT_A_BEK_SECRET: .*neither "BEK" nor "Wrapped BEK"/);
    expect(r.stderr).not.toContain('hello');
    const m = decrypt(`${vaultUri}/secrets/nope`, 'nope.img');
    expect(m.status).toBe(5);
    expect(m.stderr).toMatch(/VAULT_SECRET_NOT_FOUND/);
  });
});
