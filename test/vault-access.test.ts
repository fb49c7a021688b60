/** Principals, bearer tokens, access policies (each permission refused on its own) and the audit log. */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, test } from 'vitest';
import { KEY_PERMISSIONS, SECRET_PERMISSIONS, openVault, type Vault } from '../src/vault/index.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);

interface Fixture {
  readonly owner: Vault;
  readonly uri: string;
  readonly secretBackup: Uint8Array;
  readonly keyBackup: Uint8Array;
  readonly wrapped: Uint8Array;
  readonly encrypted: Uint8Array;
}

/** An owner-made vault with one of everything each operation needs. */
async function fixture(): Promise<Fixture> {
  const dir = tempDir();
  const owner = await openVault(`file:${dir}`, { create: true });
  await owner.setSecret('s', 'value');
  for (const n of ['d', 'r', 'p']) await owner.setSecret(n, 'v');
  await owner.deleteSecret('r');
  await owner.deleteSecret('p');
  await owner.setSecret('gone', 'v');
  const secretBackup = await owner.backupSecret('gone');
  await owner.deleteSecret('gone');
  await owner.purgeDeletedSecret('gone');
  for (const n of ['k', 'kd', 'kr', 'kp', 'kgone']) await owner.createKey(n, { kty: 'oct' });
  await owner.deleteKey('kr');
  await owner.deleteKey('kp');
  const keyBackup = await owner.backupKey('kgone');
  await owner.deleteKey('kgone');
  await owner.purgeDeletedKey('kgone');
  const wrapped = (await owner.wrapKey('k', 'A256KW', randomBytes(32))).result;
  await owner.createKey('krsa', { kty: 'RSA' });
  const encrypted = (await owner.encrypt('krsa', 'RSA-OAEP-256', randomBytes(32))).result;
  return { owner, uri: `file:${dir}`, secretBackup, keyBackup, wrapped, encrypted };
}

const SECRET_OPS: Record<(typeof SECRET_PERMISSIONS)[number], (v: Vault, f: Fixture) => Promise<unknown>> = {
  get: (v) => v.getSecret('s'),
  list: (v) => v.listSecrets(),
  set: (v) => v.setSecret('s', 'new'),
  delete: (v) => v.deleteSecret('d'),
  recover: (v) => v.recoverDeletedSecret('r'),
  purge: (v) => v.purgeDeletedSecret('p'),
  backup: (v) => v.backupSecret('s'),
  restore: (v, f) => v.restoreSecretBackup(f.secretBackup),
};

const KEY_OPS: Record<(typeof KEY_PERMISSIONS)[number], (v: Vault, f: Fixture) => Promise<unknown>> = {
  get: (v) => v.getKey('k'),
  list: (v) => v.listKeys(),
  create: (v) => v.createKey('knew', { kty: 'oct' }),
  import: (v) => v.importKey('kimp', { kty: 'oct', k: randomBytes(32).toString('base64url') }),
  update: (v) => v.updateKeyProperties('k', undefined, { tags: { a: 'b' } }),
  delete: (v) => v.deleteKey('kd'),
  recover: (v) => v.recoverDeletedKey('kr'),
  purge: (v) => v.purgeDeletedKey('kp'),
  backup: (v) => v.backupKey('k'),
  restore: (v, f) => v.restoreKeyBackup(f.keyBackup),
  wrapKey: (v) => v.wrapKey('k', 'A256KW', randomBytes(32)),
  unwrapKey: (v, f) => v.unwrapKey('k', 'A256KW', f.wrapped),
  encrypt: (v) => v.encrypt('krsa', 'RSA-OAEP-256', randomBytes(32)),
  decrypt: (v, f) => v.decrypt('krsa', 'RSA-OAEP-256', f.encrypted),
};

describe('each permission is refused on its own', () => {
  const cases = [
    ...SECRET_PERMISSIONS.map((perm) => ({ kind: 'secrets' as const, perm, op: SECRET_OPS[perm] })),
    ...KEY_PERMISSIONS.map((perm) => ({ kind: 'keys' as const, perm, op: KEY_OPS[perm] })),
  ];
  test.each(cases)('$kind/$perm', async ({ kind, perm, op }) => {
    const f = await fixture();
    const { token } = await f.owner.addPrincipal('app');
    const allBut = kind === 'secrets'
      ? { secrets: SECRET_PERMISSIONS.filter((p) => p !== perm), keys: [...KEY_PERMISSIONS] }
      : { secrets: [...SECRET_PERMISSIONS], keys: KEY_PERMISSIONS.filter((p) => p !== perm) };
    await f.owner.setAccessPolicy('app', allBut);
    const app = await openVault(f.uri, { token });
    try {
      expect(app.principal).toBe('app');
      const err = await expectCode(op(app, f), 'VAULT_FORBIDDEN');
      expect(err.message).toContain(`${kind}/${perm}`);
      // Granting exactly that one permission (and nothing else) lets the same call through: the refusal changed nothing.
      await f.owner.setAccessPolicy('app', kind === 'secrets' ? { secrets: [perm], keys: [] } : { secrets: [], keys: [perm] });
      await op(app, f);
      const audit = await f.owner.readAudit();
      const mine = audit.filter((e) => e.principal === 'app');
      expect(mine.map((e) => e.result)).toEqual(['VAULT_FORBIDDEN', 'ok']);
    } finally {
      await app.close();
      await f.owner.close();
    }
  });
});

describe('principals and tokens', () => {
  test('owner-only operations are refused to a principal holding every permission', async () => {
    const f = await fixture();
    const { token } = await f.owner.addPrincipal('app');
    await f.owner.setAccessPolicy('app', { secrets: [...SECRET_PERMISSIONS], keys: [...KEY_PERMISSIONS] });
    const app = await openVault(f.uri, { token });
    try {
      await expectCode(app.setProperties({ enabledForDiskEncryption: false }), 'VAULT_FORBIDDEN');
      await expectCode(app.addPrincipal('other'), 'VAULT_FORBIDDEN');
      await expectCode(app.removePrincipal('app'), 'VAULT_FORBIDDEN');
      await expectCode(app.listPrincipals(), 'VAULT_FORBIDDEN');
      await expectCode(app.setAccessPolicy('app', { secrets: [] }), 'VAULT_FORBIDDEN');
      await expectCode(app.deleteAccessPolicy('app'), 'VAULT_FORBIDDEN');
      await expectCode(app.readAudit(), 'VAULT_FORBIDDEN');
      expect((await app.getProperties()).enabledForDiskEncryption).toBe(true);
    } finally {
      await app.close();
      await f.owner.close();
    }
  });

  test('bad tokens are refused; removal and token replacement take effect at once', async () => {
    const f = await fixture();
    const { token } = await f.owner.addPrincipal('app');
    await f.owner.setAccessPolicy('app', { secrets: ['get'] });
    await expectCode(openVault(f.uri, { token: token.slice(0, -2) + (token.endsWith('AA') ? 'BB' : 'AA') }), 'VAULT_UNAUTHENTICATED');
    await expectCode(openVault(f.uri, { token: 'nobody.' + token.split('.')[1] }), 'VAULT_UNAUTHENTICATED');
    await expectCode(openVault(f.uri, { token: 'owner.x' }), 'VAULT_UNAUTHENTICATED');
    await expectCode(openVault(f.uri, { token: 'garbage' }), 'VAULT_UNAUTHENTICATED');
    await expectCode(f.owner.addPrincipal('app'), 'VAULT_CONFLICT');
    await expectCode(f.owner.addPrincipal('owner'), 'VAULT_CONFLICT');
    const app = await openVault(f.uri, { token });
    expect((await app.getSecret('s')).value).toBe('value');
    await f.owner.removePrincipal('app');
    await expectCode(app.getSecret('s'), 'VAULT_UNAUTHENTICATED');
    await f.owner.addPrincipal('app');
    await expectCode(app.getSecret('s'), 'VAULT_UNAUTHENTICATED');
    await app.close();
    // The token's secret part is nowhere in the database file.
    const db = readFileSync(join(f.uri.slice(5), 'vault.sqlite'));
    expect(db.includes(Buffer.from(token.split('.')[1]!))).toBe(false);
    await expectCode(f.owner.removePrincipal('ghost'), 'VAULT_PRINCIPAL_NOT_FOUND');
    await expectCode(f.owner.setAccessPolicy('app', { keys: ['sign' as 'get'] }), 'VAULT_BAD_ARGUMENT');
    expect((await f.owner.listPrincipals()).map((p) => p.name)).toEqual(['app']);
    await f.owner.close();
  });

  test('VHDCRYPT_VAULT_TOKEN selects the principal when no credentials are passed', async () => {
    const f = await fixture();
    const { token } = await f.owner.addPrincipal('env-app');
    const saved = process.env.VHDCRYPT_VAULT_TOKEN;
    process.env.VHDCRYPT_VAULT_TOKEN = token;
    try {
      const v = await openVault(f.uri);
      expect(v.principal).toBe('env-app');
      await expectCode(v.getSecret('s'), 'VAULT_FORBIDDEN');
      await v.close();
    } finally {
      if (saved === undefined) delete process.env.VHDCRYPT_VAULT_TOKEN;
      else process.env.VHDCRYPT_VAULT_TOKEN = saved;
      await f.owner.close();
    }
  });
});

describe('audit log', () => {
  test('records time, principal, operation, object id with version and result; never a value', async () => {
    const dir = tempDir();
    const v = await openVault(`file:${dir}`, { create: true });
    const before = Date.now();
    const value = 'audit-secret-' + randomBytes(8).toString('hex');
    const s = await v.setSecret('s', value);
    await v.getSecret('s');
    await expectCode(v.getSecret('missing'), 'VAULT_SECRET_NOT_FOUND');
    await v.createKey('k', { kty: 'oct' });
    const dek = randomBytes(32);
    const w = await v.wrapKey('k', 'A256KW', dek);
    await v.unwrapKey('k', 'A256KW', w.result);
    const log = await v.readAudit();
    expect(log.map((e) => [e.operation, e.result])).toEqual([
      ['setSecret', 'ok'], ['getSecret', 'ok'], ['getSecret', 'VAULT_SECRET_NOT_FOUND'], ['createKey', 'ok'], ['wrapKey', 'ok'], ['unwrapKey', 'ok'],
    ]);
    expect(log[0]).toMatchObject({ principal: 'owner', objectId: s.id });
    expect(log[1]!.objectId).toBe(s.id);
    expect(log[4]!.objectId).toBe(w.kid);
    for (const e of log) expect(e.time.getTime()).toBeGreaterThanOrEqual(before - 5);
    const text = JSON.stringify(log);
    expect(text).not.toContain(value);
    await v.close();
    const raw = readFileSync(join(dir, 'vault.sqlite'));
    const walPath = join(dir, 'vault.sqlite-wal');
    const wal = existsSync(walPath) ? readFileSync(walPath) : Buffer.alloc(0);
    for (const blob of [raw, wal]) {
      expect(blob.includes(Buffer.from(value))).toBe(false);
      expect(blob.includes(dek)).toBe(false);
    }
  });

  test('append-only, and an edited entry breaks the MAC chain', async () => {
    const dir = tempDir();
    const v = await openVault(`file:${dir}`, { create: true });
    await v.setSecret('s', 'v');
    await v.getSecret('s');
    await v.close();
    const db = new Database(join(dir, 'vault.sqlite'));
    expect(() => db.prepare("UPDATE audit SET principal = 'mallory' WHERE seq = 1").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit').run()).toThrow(/append-only/);
    db.exec('DROP TRIGGER audit_append_only_update');
    db.prepare("UPDATE audit SET operation = 'listSecrets' WHERE seq = 2").run();
    db.close();
    const again = await openVault(`file:${dir}`);
    await expectCode(again.readAudit(), 'VAULT_TAMPERED');
    await again.close();
  });
});
