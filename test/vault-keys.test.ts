/**
 * Keys: create/import/get (public part only), wrap/unwrap checked against
 * node:crypto and the RFC 3394 test vectors, the date and enabled rules,
 * versions, soft delete, backup/restore.
 */
import { constants, type JsonWebKey as NodeJsonWebKey, createPrivateKey, createPublicKey, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeEach, describe, expect, test } from 'vitest';
import { openVault, type Vault, type VaultKey } from '../src/vault/index.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';

let vault: Vault;
beforeEach(async () => {
  vault = await openVault(`file:${tempDir()}`, { create: true });
});
afterEach(async () => {
  await vault.close();
});
afterAll(cleanupTempDirs);

const HOUR = 3_600_000;
const PRIVATE_FIELDS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

// RFC 3394 §4.3 and §4.6: 256-bit KEK wrapping 128-bit and 256-bit key data.
const RFC3394_KEK = '000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F';
const RFC3394 = [
  { data: '00112233445566778899AABBCCDDEEFF', wrapped: '64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7' },
  {
    data: '00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F',
    wrapped: '28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21',
  },
];

function rsaJwk(bits = 2048): NodeJsonWebKey {
  return generateKeyPairSync('rsa', { modulusLength: bits }).privateKey.export({ format: 'jwk' });
}

/** Every byte string a value exposes (strings, base64url-decoded strings, typed arrays), deep. */
function assertNoSecretMaterial(value: unknown, forbidden: Buffer[]): void {
  const seen: unknown[] = [];
  const walk = (v: unknown): void => {
    if (v === null || v === undefined || seen.includes(v)) return;
    if (typeof v === 'string') {
      for (const f of forbidden) {
        expect(v.includes(f.toString('base64url'))).toBe(false);
        expect(v.includes(f.toString('base64'))).toBe(false);
        expect(v.toLowerCase().includes(f.toString('hex'))).toBe(false);
      }
      return;
    }
    if (v instanceof Uint8Array) {
      for (const f of forbidden) expect(Buffer.from(v).includes(f)).toBe(false);
      return;
    }
    if (typeof v === 'object') {
      seen.push(v);
      for (const k of Object.keys(v as object)) {
        expect(PRIVATE_FIELDS).not.toContain(k);
        walk((v as Record<string, unknown>)[k]);
      }
    }
  };
  walk(value);
}

describe('create, import, get', () => {
  test('RSA 2048/3072/4096 and oct 256; other sizes and types refused', async () => {
    for (const size of [2048, 3072, 4096]) {
      const k = await vault.createKey(`rsa${size}`, { kty: 'RSA', size });
      expect(k.properties).toMatchObject({ kty: 'RSA', keySize: size, enabled: true });
      expect(Buffer.from(k.key.n!, 'base64url').length * 8).toBe(size);
      expect(k.key.e).toBe('AQAB');
    }
    const oct = await vault.createKey('oct', { kty: 'oct' });
    expect(oct.key).toEqual({ kid: oct.properties.id, kty: 'oct', key_ops: ['wrapKey', 'unwrapKey'] });
    await expectCode(vault.createKey('bad', { kty: 'RSA', size: 1024 }), 'VAULT_INVALID_KEY');
    await expectCode(vault.createKey('bad', { kty: 'oct', size: 128 }), 'VAULT_INVALID_KEY');
    await expectCode(vault.createKey('bad', { kty: 'EC' as 'RSA' }), 'VAULT_INVALID_KEY');
    await expectCode(vault.createKey('bad_name', { kty: 'oct' }), 'VAULT_BAD_NAME');
  });

  test('import takes private RSA and 256-bit oct JWKs only', async () => {
    const jwk = rsaJwk();
    const k = await vault.importKey('imp', jwk);
    expect(k.key.n).toBe(jwk.n);
    const pubOnly = { kty: 'RSA', n: jwk.n, e: jwk.e };
    await expectCode(vault.importKey('pub', pubOnly), 'VAULT_INVALID_KEY');
    await expectCode(vault.importKey('small', rsaJwk(1024)), 'VAULT_INVALID_KEY');
    await expectCode(vault.importKey('o', { kty: 'oct', k: randomBytes(16).toString('base64url') }), 'VAULT_INVALID_KEY');
    await expectCode(vault.importKey('garbage', { kty: 'RSA', n: 'AA', e: 'AQAB', d: 'AA', p: 'AA', q: 'AA', dp: 'AA', dq: 'AA', qi: 'AA' }), 'VAULT_INVALID_KEY');
  });

  test('no call returns private or symmetric key material', async () => {
    const jwk = rsaJwk();
    const octK = randomBytes(32);
    const forbidden = [jwk.d!, jwk.p!, jwk.q!, jwk.dp!, jwk.dq!, jwk.qi!].map((f) => Buffer.from(f, 'base64url')).concat([octK]);
    const results: unknown[] = [];
    results.push(await vault.importKey('rsa', jwk, { tags: { a: 'b' } }));
    results.push(await vault.importKey('oct', { kty: 'oct', k: octK.toString('base64url') }));
    results.push(await vault.getKey('rsa'), await vault.getKey('oct'));
    results.push(await vault.listKeys(), await vault.listKeyVersions('rsa'), await vault.listKeyVersions('oct'));
    results.push(await vault.updateKeyProperties('oct', undefined, { tags: { x: 'y' } }));
    results.push(await vault.wrapKey('oct', 'A256KW', randomBytes(32)), await vault.wrapKey('rsa', 'RSA-OAEP', randomBytes(32)));
    const backups = [await vault.backupKey('rsa'), await vault.backupKey('oct')];
    results.push(...backups, await vault.rotateKey('oct'));
    results.push(await vault.deleteKey('oct'), await vault.listDeletedKeys(), await vault.recoverDeletedKey('oct'));
    results.push(await vault.readAudit(), await vault.getProperties());
    assertNoSecretMaterial(results, forbidden);
    // The RSA public part is really there and really public.
    const got = (await vault.getKey('rsa')).key;
    expect(got.n).toBe(jwk.n);
  });
});

describe('wrap and unwrap against node:crypto', () => {
  async function roundTrips(key: VaultKey, alg: 'RSA-OAEP' | 'RSA-OAEP-256', privateJwk: NodeJsonWebKey): Promise<void> {
    const hash = alg === 'RSA-OAEP' ? 'sha1' : 'sha256';
    const pub = createPublicKey({ key: { kty: 'RSA', n: key.key.n!, e: key.key.e! }, format: 'jwk' });
    const dek = randomBytes(64);
    // node:crypto wraps with the public JWK from get -> the vault unwraps.
    const byNode = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, dek);
    const un = await vault.unwrapKey(key.properties.id, alg, byNode);
    expect(Buffer.from(un.result).equals(dek)).toBe(true);
    expect(un.kid).toBe(key.properties.id);
    // The vault wraps -> node:crypto unwraps with the private key (known here because we imported it).
    const w = await vault.wrapKey(key.properties.name, alg, dek);
    const priv = createPrivateKey({ key: privateJwk, format: 'jwk' });
    expect(privateDecrypt({ key: priv, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, w.result).equals(dek)).toBe(true);
    // The other OAEP hash does not open it.
    const other = alg === 'RSA-OAEP' ? 'RSA-OAEP-256' : 'RSA-OAEP';
    await expectCode(vault.unwrapKey(key.properties.id, other, w.result), 'VAULT_UNWRAP_FAILED');
  }

  test('RSA-OAEP (SHA-1) and RSA-OAEP-256', async () => {
    const jwk = rsaJwk();
    const k = await vault.importKey('kek', jwk);
    await roundTrips(k, 'RSA-OAEP', jwk);
    await roundTrips(k, 'RSA-OAEP-256', jwk);
  });

  test('RSA-OAEP-256 with a vault-generated 3072-bit key: node:crypto wraps with the public JWK', async () => {
    const k = await vault.createKey('kek', { kty: 'RSA', size: 3072 });
    const pub = createPublicKey({ key: { kty: 'RSA', n: k.key.n!, e: k.key.e! }, format: 'jwk' });
    const dek = randomBytes(32);
    const wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
    expect(Buffer.from((await vault.unwrapKey('kek', 'RSA-OAEP-256', wrapped)).result).equals(dek)).toBe(true);
    // RSA-OAEP-256 with 3072 bits carries at most 384 - 66 = 318 bytes.
    await vault.wrapKey('kek', 'RSA-OAEP-256', randomBytes(318));
    await expectCode(vault.wrapKey('kek', 'RSA-OAEP-256', randomBytes(319)), 'VAULT_BAD_ARGUMENT');
  });

  test('A256KW matches the RFC 3394 test vectors through an imported oct key', async () => {
    const k = await vault.importKey('kw', { kty: 'oct', k: Buffer.from(RFC3394_KEK, 'hex').toString('base64url') });
    for (const v of RFC3394) {
      const w = await vault.wrapKey('kw', 'A256KW', Buffer.from(v.data, 'hex'));
      expect(Buffer.from(w.result).toString('hex').toUpperCase()).toBe(v.wrapped);
      const u = await vault.unwrapKey(k.properties.id, 'A256KW', Buffer.from(v.wrapped, 'hex'));
      expect(Buffer.from(u.result).toString('hex').toUpperCase()).toBe(v.data);
    }
    const altered = Buffer.from(RFC3394[1]!.wrapped, 'hex');
    altered[5]! ^= 1;
    await expectCode(vault.unwrapKey('kw', 'A256KW', altered), 'VAULT_UNWRAP_FAILED');
    await expectCode(vault.wrapKey('kw', 'A256KW', randomBytes(12)), 'VAULT_BAD_ARGUMENT');
    await expectCode(vault.wrapKey('kw', 'RSA-OAEP', randomBytes(32)), 'VAULT_UNSUPPORTED_ALGORITHM');
    await expectCode(vault.wrapKey('kw', 'dir' as 'A256KW', randomBytes(32)), 'VAULT_UNSUPPORTED_ALGORITHM');
  });

  test('a wrong KEK fails to unwrap', async () => {
    await vault.createKey('a', { kty: 'RSA' });
    await vault.createKey('b', { kty: 'RSA' });
    await vault.createKey('x', { kty: 'oct' });
    await vault.createKey('y', { kty: 'oct' });
    const dek = randomBytes(32);
    await expectCode(vault.unwrapKey('b', 'RSA-OAEP-256', (await vault.wrapKey('a', 'RSA-OAEP-256', dek)).result), 'VAULT_UNWRAP_FAILED');
    await expectCode(vault.unwrapKey('y', 'A256KW', (await vault.wrapKey('x', 'A256KW', dek)).result), 'VAULT_UNWRAP_FAILED');
    // An older version of the same key is a different key too.
    const v1 = await vault.wrapKey('x', 'A256KW', dek);
    await vault.rotateKey('x');
    await expectCode(vault.unwrapKey('x', 'A256KW', v1.result), 'VAULT_UNWRAP_FAILED');
    expect(Buffer.from((await vault.unwrapKey(v1.kid, 'A256KW', v1.result)).result).equals(dek)).toBe(true);
  });
});

describe('dates protect new data, enabled refuses everything', () => {
  test('outside nbf..exp a key refuses wrapKey but still unwraps', async () => {
    const k = await vault.createKey('k', { kty: 'oct' });
    const dek = randomBytes(32);
    const w = await vault.wrapKey('k', 'A256KW', dek);
    await vault.updateKeyProperties('k', undefined, { expiresOn: new Date(Date.now() - 1000) });
    await expectCode(vault.wrapKey('k', 'A256KW', dek), 'VAULT_KEY_EXPIRED');
    expect(Buffer.from((await vault.unwrapKey(k.properties.id, 'A256KW', w.result)).result).equals(dek)).toBe(true);
    await vault.updateKeyProperties('k', undefined, { expiresOn: null, notBefore: new Date(Date.now() + HOUR) });
    await expectCode(vault.wrapKey('k', 'A256KW', dek), 'VAULT_KEY_NOT_YET_VALID');
    expect(Buffer.from((await vault.unwrapKey('k', 'A256KW', w.result)).result).equals(dek)).toBe(true);
  });

  test('enabled: false refuses wrap and unwrap; re-enabling restores both', async () => {
    await vault.createKey('k', { kty: 'RSA' });
    const w = await vault.wrapKey('k', 'RSA-OAEP', randomBytes(32));
    await vault.updateKeyProperties('k', undefined, { enabled: false });
    await expectCode(vault.wrapKey('k', 'RSA-OAEP', randomBytes(32)), 'VAULT_KEY_DISABLED');
    await expectCode(vault.unwrapKey('k', 'RSA-OAEP', w.result), 'VAULT_KEY_DISABLED');
    await vault.updateKeyProperties('k', undefined, { enabled: true });
    await vault.unwrapKey('k', 'RSA-OAEP', w.result);
  });
});

describe('encrypt and decrypt', () => {
  test('the rules of wrap and unwrap: node:crypto decrypts, dates refuse encrypt only, disabled refuses both, no A256KW', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const k = await vault.importKey('rsa', privateKey.export({ format: 'jwk' }));
    const data = randomBytes(40);
    const e = await vault.encrypt('rsa', 'RSA-OAEP-256', data);
    expect(e.kid).toBe(k.properties.id);
    expect(privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, e.result).equals(data)).toBe(true);
    await vault.updateKeyProperties('rsa', undefined, { expiresOn: new Date(Date.now() - 1000) });
    await expectCode(vault.encrypt('rsa', 'RSA-OAEP-256', data), 'VAULT_KEY_EXPIRED');
    expect(Buffer.from((await vault.decrypt('rsa', 'RSA-OAEP-256', e.result)).result).equals(data)).toBe(true);
    await vault.updateKeyProperties('rsa', undefined, { expiresOn: null, enabled: false });
    await expectCode(vault.encrypt('rsa', 'RSA-OAEP', data), 'VAULT_KEY_DISABLED');
    await expectCode(vault.decrypt('rsa', 'RSA-OAEP-256', e.result), 'VAULT_KEY_DISABLED');
    await vault.updateKeyProperties('rsa', undefined, { enabled: true });
    await expectCode(vault.decrypt('rsa', 'RSA-OAEP', e.result), 'VAULT_UNWRAP_FAILED');
    await vault.createKey('oct', { kty: 'oct' });
    // A256KW is key wrapping, not encryption: refused for every key type, and RSA-OAEP does not apply to an oct key.
    await expectCode(vault.encrypt('oct', 'A256KW' as 'RSA-OAEP', randomBytes(32)), 'VAULT_UNSUPPORTED_ALGORITHM');
    await expectCode(vault.decrypt('rsa', 'A256KW' as 'RSA-OAEP', e.result), 'VAULT_UNSUPPORTED_ALGORITHM');
    await expectCode(vault.encrypt('oct', 'RSA-OAEP', randomBytes(32)), 'VAULT_UNSUPPORTED_ALGORITHM');
  });
});

describe('versions, soft delete, backup', () => {
  test('rotate makes a new version of the same type and size', async () => {
    const k1 = await vault.createKey('k', { kty: 'RSA', size: 2048, tags: { t: '1' } });
    const k2 = await vault.rotateKey('k');
    expect(k2.properties).toMatchObject({ kty: 'RSA', keySize: 2048, tags: { t: '1' } });
    expect(k2.properties.version).not.toBe(k1.properties.version);
    expect(k2.key.n).not.toBe(k1.key.n);
    expect((await vault.getKey('k')).properties.version).toBe(k2.properties.version);
    expect((await vault.getKey('k', k1.properties.version)).key.n).toBe(k1.key.n);
    expect((await vault.listKeyVersions('k')).map((p) => p.version)).toEqual([k1.properties.version, k2.properties.version]);
  });

  test('delete, recover, purge', async () => {
    await vault.createKey('k', { kty: 'oct' });
    const w = await vault.wrapKey('k', 'A256KW', randomBytes(32));
    await vault.deleteKey('k');
    await expectCode(vault.unwrapKey(w.kid, 'A256KW', w.result), 'VAULT_DELETED');
    await expectCode(vault.getKey('k'), 'VAULT_DELETED');
    await expectCode(vault.createKey('k', { kty: 'oct' }), 'VAULT_DELETED');
    expect(await vault.listKeys()).toEqual([]);
    await vault.recoverDeletedKey('k');
    await vault.unwrapKey(w.kid, 'A256KW', w.result);
    await vault.deleteKey('k');
    await vault.purgeDeletedKey('k');
    await expectCode(vault.unwrapKey(w.kid, 'A256KW', w.result), 'VAULT_KEY_NOT_FOUND');
  });

  test('backup restores into the same vault key; another vault refuses it', async () => {
    const k = await vault.createKey('k', { kty: 'RSA' });
    const dek = randomBytes(32);
    const w = await vault.wrapKey('k', 'RSA-OAEP-256', dek);
    const blob = await vault.backupKey('k');
    await vault.deleteKey('k');
    await vault.purgeDeletedKey('k');
    const other = await openVault(`file:${tempDir()}`, { create: true });
    try {
      await expectCode(other.restoreKeyBackup(blob), 'VAULT_BAD_BACKUP');
    } finally {
      await other.close();
    }
    const r = await vault.restoreKeyBackup(blob);
    expect(r.id).toBe(k.properties.id);
    expect(Buffer.from((await vault.unwrapKey(w.kid, 'RSA-OAEP-256', w.result)).result).equals(dek)).toBe(true);
  });
});
