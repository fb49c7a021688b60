/**
 * `vhdcrypt vault serve` driven by Microsoft's own SDK clients (@azure/identity ClientSecretCredential against
 * the server's token endpoint, SecretClient, KeyClient, CryptographyClient), the CA trusted through the clients'
 * tlsOptions (verification stays on), node:crypto as the oracle where bytes matter.
 */
import { constants, createPublicKey, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import { ClientSecretCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { SecretClient } from '@azure/keyvault-secrets';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { startVaultServer, type Permissions, type StartedVaultServer } from './helpers/vault-server.js';

let s: StartedVaultServer;
beforeAll(async () => {
  s = await startVaultServer();
}, 90_000);
afterAll(async () => {
  const r = await s?.stop();
  expect(r?.code).toBe(0);
});

const ALL: Permissions = {
  secrets: ['get', 'list', 'set', 'delete', 'recover', 'purge', 'backup', 'restore'],
  keys: ['get', 'list', 'create', 'import', 'update', 'delete', 'recover', 'purge', 'backup', 'restore', 'wrapKey', 'unwrapKey', 'encrypt', 'decrypt'],
};

interface Clients {
  cred: ClientSecretCredential;
  secrets: SecretClient;
  keys: KeyClient;
  crypto: (id: string) => CryptographyClient;
}

function clientsFor(clientId: string, clientSecret: string): Clients {
  const tlsOptions = { ca: s.caPem };
  const cred = new ClientSecretCredential(s.tenantId, clientId, clientSecret, { authorityHost: s.url, disableInstanceDiscovery: true, tlsOptions });
  // No retries: a refused call must surface as its status, not be retried into a timeout.
  const options = { disableChallengeResourceVerification: true, tlsOptions, retryOptions: { maxRetries: 0 } };
  return {
    cred,
    secrets: new SecretClient(s.url, cred, options),
    keys: new KeyClient(s.url, cred, options),
    crypto: (id: string) => new CryptographyClient(id, cred, options),
  };
}

async function clients(name: string, permissions: Permissions): Promise<Clients> {
  const { clientId, clientSecret } = await s.addPrincipal(name, permissions);
  return clientsFor(clientId, clientSecret);
}

async function restError(p: Promise<unknown>): Promise<{ statusCode?: number; code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { statusCode?: number; code?: string; message: string };
  }
  throw new Error('expected the call to fail');
}

const pollOptions = { intervalInMs: 1 };

describe('vault serve with the Azure SDK: secrets', () => {
  let c: Clients;
  beforeAll(async () => {
    c = await clients('secrets-app', ALL);
  });

  test('set, get (latest and by version), update properties, versions, a disabled secret is 403 SecretDisabled', async () => {
    const v1 = await c.secrets.setSecret('db', 'one', { contentType: 'text/plain', tags: { env: 'prod' } });
    expect(v1.value).toBe('one');
    expect(v1.properties.id).toMatch(new RegExp(`^${s.url}/secrets/db/[0-9a-f]{32}$`));
    expect(v1.properties).toMatchObject({ contentType: 'text/plain', tags: { env: 'prod' }, enabled: true, recoverableDays: 90, recoveryLevel: 'Recoverable+Purgeable' });
    const v2 = await c.secrets.setSecret('db', 'two', { expiresOn: new Date('2037-01-01T00:00:00Z') });
    expect((await c.secrets.getSecret('db')).value).toBe('two');
    expect((await c.secrets.getSecret('db', { version: v1.properties.version! })).value).toBe('one');
    expect((await c.secrets.getSecret('db')).properties.expiresOn).toEqual(new Date('2037-01-01T00:00:00Z'));
    const versions = [];
    for await (const p of c.secrets.listPropertiesOfSecretVersions('db')) versions.push(p.version);
    expect(versions).toEqual([v1.properties.version, v2.properties.version]);
    const updated = await c.secrets.updateSecretProperties('db', v2.properties.version!, { enabled: false, tags: { env: 'test' } });
    expect(updated).toMatchObject({ enabled: false, tags: { env: 'test' } });
    const e = await restError(c.secrets.getSecret('db'));
    expect(e).toMatchObject({ statusCode: 403, code: 'Forbidden' });
    expect(e.message).toMatch(/disabled/);
    const missing = await restError(c.secrets.getSecret('nothing-here'));
    expect(missing).toMatchObject({ statusCode: 404, code: 'SecretNotFound' });
  }, 60_000);

  test('delete and recover pollers, deleted listing, a soft-deleted name is 409, purge', async () => {
    await c.secrets.setSecret('gone', 'x');
    const del = await c.secrets.beginDeleteSecret('gone', pollOptions);
    const deleted = await del.pollUntilDone();
    expect(deleted.recoveryId).toBe(`${s.url}/deletedsecrets/gone`);
    expect(deleted.deletedOn).toBeInstanceOf(Date);
    expect((await c.secrets.getDeletedSecret('gone')).name).toBe('gone');
    const names = [];
    for await (const d of c.secrets.listDeletedSecrets()) names.push(d.name);
    expect(names).toContain('gone');
    const conflict = await restError(c.secrets.setSecret('gone', 'y'));
    expect(conflict).toMatchObject({ statusCode: 409, code: 'Conflict' });
    const rec = await c.secrets.beginRecoverDeletedSecret('gone', pollOptions);
    expect((await rec.pollUntilDone()).name).toBe('gone');
    expect((await c.secrets.getSecret('gone')).value).toBe('x');
    await (await c.secrets.beginDeleteSecret('gone', pollOptions)).pollUntilDone();
    await c.secrets.purgeDeletedSecret('gone');
    expect(await restError(c.secrets.getDeletedSecret('gone'))).toMatchObject({ statusCode: 404, code: 'SecretNotFound' });
  }, 60_000);

  test('backup and restore', async () => {
    await c.secrets.setSecret('saved', 'keep me');
    const blob = await c.secrets.backupSecret('saved');
    expect(blob!.length).toBeGreaterThan(16);
    await (await c.secrets.beginDeleteSecret('saved', pollOptions)).pollUntilDone();
    await c.secrets.purgeDeletedSecret('saved');
    const restored = await c.secrets.restoreSecretBackup(blob!);
    expect(restored.name).toBe('saved');
    expect((await c.secrets.getSecret('saved')).value).toBe('keep me');
  }, 60_000);

  test('paging over 60 secrets with maxresults 7', async () => {
    const v = await openVault(`file:${s.vaultDir}`, { passphrase: '' });
    try {
      for (let i = 0; i < 60; i++) await v.setSecret(`page-${String(i).padStart(2, '0')}`, `v${i}`);
    } finally {
      await v.close();
    }
    const seen: string[] = [];
    let pages = 0;
    for await (const page of c.secrets.listPropertiesOfSecrets().byPage({ maxPageSize: 7 })) {
      pages++;
      expect(page.length).toBeLessThanOrEqual(7);
      for (const p of page) if (p.name.startsWith('page-')) seen.push(p.name);
    }
    expect(seen).toEqual(Array.from({ length: 60 }, (_, i) => `page-${String(i).padStart(2, '0')}`));
    expect(pages).toBeGreaterThanOrEqual(9);
  }, 60_000);
});

describe('vault serve with the Azure SDK: keys', () => {
  let c: Clients;
  beforeAll(async () => {
    c = await clients('keys-app', ALL);
  });

  test('RSA create, get (public part only), wrap/unwrap RSA-OAEP and RSA-OAEP-256, encrypt/decrypt; node:crypto wraps with the public key', async () => {
    const k = await c.keys.createRsaKey('kek', { keySize: 2048, tags: { use: 'disks' } });
    expect(k.key?.kty).toBe('RSA');
    expect(k.key?.d).toBeUndefined();
    expect(k.properties.tags).toEqual({ use: 'disks' });
    const got = await c.keys.getKey('kek');
    expect(got.id).toBe(k.id);
    const cc = c.crypto(k.id!);
    const dek = randomBytes(32);
    for (const alg of ['RSA-OAEP', 'RSA-OAEP-256'] as const) {
      const w = await cc.wrapKey(alg, dek);
      expect(Buffer.from((await cc.unwrapKey(alg, w.result)).result)).toEqual(dek);
      const e = await cc.encrypt({ algorithm: alg, plaintext: dek });
      expect(Buffer.from((await cc.decrypt({ algorithm: alg, ciphertext: e.result })).result)).toEqual(dek);
    }
    // node:crypto as the oracle: a wrap made with the public JWK the server returned unwraps on the server.
    const pub = createPublicKey({ key: { kty: 'RSA', n: Buffer.from(got.key!.n!).toString('base64url'), e: Buffer.from(got.key!.e!).toString('base64url') }, format: 'jwk' });
    const wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, dek);
    expect(Buffer.from((await c.crypto(`${s.url}/keys/kek`).unwrapKey('RSA-OAEP-256', wrapped)).result)).toEqual(dek);
  }, 60_000);

  test('oct 256 with A256KW; import; update; versions; rotate; rng', async () => {
    const oct = await c.keys.createOctKey('aes', { keySize: 256 });
    expect(oct.keyType).toBe('oct');
    const cc = c.crypto(oct.id!);
    const dek = randomBytes(32);
    const w = await cc.wrapKey('A256KW', dek);
    expect(w.result.length).toBe(40);
    expect(Buffer.from((await cc.unwrapKey('A256KW', w.result)).result)).toEqual(dek);

    const jwk = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
    const imported = await c.keys.importKey('imported', { kty: 'RSA', n: Buffer.from(jwk.n!, 'base64url'), e: Buffer.from(jwk.e!, 'base64url'), d: Buffer.from(jwk.d!, 'base64url'),
      p: Buffer.from(jwk.p!, 'base64url'), q: Buffer.from(jwk.q!, 'base64url'), dp: Buffer.from(jwk.dp!, 'base64url'), dq: Buffer.from(jwk.dq!, 'base64url'), qi: Buffer.from(jwk.qi!, 'base64url') });
    expect(Buffer.from(imported.key!.n!).toString('base64url')).toBe(jwk.n);

    const updated = await c.keys.updateKeyProperties('imported', imported.properties.version!, { tags: { a: 'b' }, expiresOn: new Date('2036-01-01T00:00:00Z') });
    expect(updated.properties).toMatchObject({ tags: { a: 'b' }, expiresOn: new Date('2036-01-01T00:00:00Z') });

    const rotated = await c.keys.rotateKey('imported');
    expect(rotated.properties.version).not.toBe(imported.properties.version);
    const versions = [];
    for await (const p of c.keys.listPropertiesOfKeyVersions('imported')) versions.push(p.version);
    expect(versions).toEqual([imported.properties.version, rotated.properties.version]);
    const names = [];
    for await (const p of c.keys.listPropertiesOfKeys()) names.push(p.name);
    expect(names).toEqual(expect.arrayContaining(['aes', 'imported']));

    const r = await c.keys.getRandomBytes(48);
    expect(r.length).toBe(48);
  }, 60_000);

  test('delete/recover pollers, deleted key, purge, backup and restore', async () => {
    const k = await c.keys.createRsaKey('temp', { keySize: 2048 });
    const blob = await c.keys.backupKey('temp');
    const d = await (await c.keys.beginDeleteKey('temp', pollOptions)).pollUntilDone();
    expect(d.properties.recoveryId).toBe(`${s.url}/deletedkeys/temp`);
    expect((await c.keys.getDeletedKey('temp')).name).toBe('temp');
    const names = [];
    for await (const x of c.keys.listDeletedKeys()) names.push(x.name);
    expect(names).toContain('temp');
    const recovered = await (await c.keys.beginRecoverDeletedKey('temp', pollOptions)).pollUntilDone();
    expect(recovered.id).toBe(k.id);
    await (await c.keys.beginDeleteKey('temp', pollOptions)).pollUntilDone();
    await c.keys.purgeDeletedKey('temp');
    const restored = await c.keys.restoreKeyBackup(blob!);
    expect(restored.id).toBe(k.id);
  }, 60_000);
});

describe('vault serve with the Azure SDK: identity and access', () => {
  test('a principal without unwrapKey is 403; a policy change through the file takes effect at once', async () => {
    const owner = await clients('kek-owner', ALL);
    const k = await owner.keys.createRsaKey('kek2', { keySize: 2048 });
    const w = await owner.crypto(k.id!).wrapKey('RSA-OAEP-256', randomBytes(32));
    const c = await clients('no-unwrap', { keys: ['get', 'wrapKey'] });
    const e = await restError(c.crypto(k.id!).unwrapKey('RSA-OAEP-256', w.result));
    expect(e).toMatchObject({ statusCode: 403, code: 'Forbidden' });
    const v = await openVault(`file:${s.vaultDir}`, { passphrase: '' });
    try {
      await v.setAccessPolicy('no-unwrap', { keys: ['get', 'wrapKey', 'unwrapKey'] });
    } finally {
      await v.close();
    }
    expect((await c.crypto(k.id!).unwrapKey('RSA-OAEP-256', w.result)).result.length).toBe(32);
  }, 60_000);

  test('a wrong client secret is refused by the token endpoint', async () => {
    const { clientId, clientSecret } = await s.addPrincipal('wrong-secret', ALL);
    const bad = clientsFor(clientId, clientSecret.slice(0, -2) + (clientSecret.endsWith('AA') ? 'BB' : 'AA'));
    const e = await restError(bad.secrets.getSecret('db'));
    expect(e.message).toMatch(/invalid_client|Invalid client secret/);
  }, 60_000);

  test('a removed principal is refused at once, its token still unexpired', async () => {
    const c = await clients('leaver', ALL);
    await c.secrets.setSecret('leaver-secret', 'v');
    const v = await openVault(`file:${s.vaultDir}`, { passphrase: '' });
    try {
      await v.removePrincipal('leaver');
    } finally {
      await v.close();
    }
    const e = await restError(c.secrets.getSecret('leaver-secret'));
    expect(e.statusCode === 401 || /invalid_client|AADSTS/.test(e.message)).toBe(true);
  }, 60_000);

  test('tokens expire (3 s on this server) and the SDK gets new ones', async () => {
    const main = s;
    s = await startVaultServer({ tokenLifetime: 3 });
    try {
      const c = await clients('long-lived', ALL);
      await c.secrets.setSecret('ticking', 'a');
      const first = await c.cred.getToken(`${s.url}/.default`);
      // Wait for the first token to pass its expiry as the server sees it: an event, not a fixed sleep.
      await new Promise<void>((resolve) => {
        const poll = (): void => void refused(first!.token).then((expired) => (expired ? resolve() : setTimeout(poll, 200)));
        poll();
      });
      expect((await c.secrets.getSecret('ticking')).value).toBe('a');
    } finally {
      await s.stop();
      s = main;
    }
  }, 60_000);
});

/** Whether the server now refuses `token` (401 with an invalid_token challenge): a raw request with it. */
async function refused(token: string): Promise<boolean> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(`${s.url}/secrets/ticking?api-version=7.5`, { ca: s.caPem, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      resolve(res.statusCode === 401 && /error="invalid_token"/.test(String(res.headers['www-authenticate'])));
    });
    req.on('error', reject);
    req.end();
  });
}
