/** Secrets: Key Vault's limits, versions, attributes and dates on get, soft delete, backup/restore. */
import { afterAll, afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { openVault, type Vault } from '../src/vault/index.js';
import { join } from 'node:path';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';

let vault: Vault;
let dir: string;
beforeEach(async () => {
  dir = tempDir();
  vault = await openVault(`file:${dir}`, { create: true });
});
afterEach(async () => {
  await vault.close();
});
afterAll(cleanupTempDirs);

const HOUR = 3_600_000;

describe('limits', () => {
  test('names are 1-127 of 0-9 a-z A-Z -', async () => {
    await vault.setSecret('a', 'v');
    await vault.setSecret('A-z-09', 'v');
    await vault.setSecret('x'.repeat(127), 'v');
    for (const bad of ['', 'x'.repeat(128), 'a_b', 'a.b', 'a b', 'ä', 'a/b']) {
      await expectCode(vault.setSecret(bad, 'v'), 'VAULT_BAD_NAME');
    }
    await expectCode(vault.getSecret('a_b'), 'VAULT_BAD_NAME');
  });

  test('values up to 10 KB (10240 bytes of UTF-8)', async () => {
    await vault.setSecret('max', 'x'.repeat(10240));
    expect((await vault.getSecret('max')).value.length).toBe(10240);
    await expectCode(vault.setSecret('over', 'x'.repeat(10241)), 'VAULT_VALUE_TOO_LARGE');
    // 3414 three-byte characters = 10242 bytes although only 3414 characters.
    await expectCode(vault.setSecret('utf8', '€'.repeat(3414)), 'VAULT_VALUE_TOO_LARGE');
    await vault.setSecret('utf8', '€'.repeat(3413));
  });

  test('contentType up to 255 characters', async () => {
    await vault.setSecret('ct', 'v', { contentType: 'c'.repeat(255) });
    await expectCode(vault.setSecret('ct', 'v', { contentType: 'c'.repeat(256) }), 'VAULT_CONTENT_TYPE_TOO_LONG');
    await expectCode(vault.updateSecretProperties('ct', undefined, { contentType: 'c'.repeat(256) }), 'VAULT_CONTENT_TYPE_TOO_LONG');
  });

  test('at most 15 tags, names up to 512 and values up to 256 characters', async () => {
    const fifteen = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`t${i}`, 'v']));
    const p = await vault.setSecret('tags', 'v', { tags: { ...fifteen } });
    expect(Object.keys(p.tags)).toHaveLength(15);
    await expectCode(vault.setSecret('tags', 'v', { tags: { ...fifteen, t15: 'v' } }), 'VAULT_TOO_MANY_TAGS');
    await vault.setSecret('tags', 'v', { tags: { ['n'.repeat(512)]: 'v'.repeat(256) } });
    await expectCode(vault.setSecret('tags', 'v', { tags: { ['n'.repeat(513)]: 'v' } }), 'VAULT_BAD_TAG');
    await expectCode(vault.setSecret('tags', 'v', { tags: { n: 'v'.repeat(257) } }), 'VAULT_BAD_TAG');
    await expectCode(vault.updateSecretProperties('tags', undefined, { tags: { ...fifteen, t15: 'v' } }), 'VAULT_TOO_MANY_TAGS');
    await expectCode(vault.createKey('k', { kty: 'oct', tags: { ...fifteen, t15: 'v' } }), 'VAULT_TOO_MANY_TAGS');
  });
});

describe('versions', () => {
  test('every set makes a new version; get returns the latest or the one asked for', async () => {
    const v1 = await vault.setSecret('s', 'one');
    const v2 = await vault.setSecret('s', 'two');
    expect(v1.version).toMatch(/^[0-9a-f]{32}$/);
    expect(v2.version).not.toBe(v1.version);
    expect(v1.id).toBe(`file:${dir}/secrets/s/${v1.version}`);
    expect((await vault.getSecret('s')).value).toBe('two');
    expect((await vault.getSecret('s', v1.version)).value).toBe('one');
    expect((await vault.getSecret(v1.id)).value).toBe('one');
    expect((await vault.listSecretVersions('s')).map((p) => p.version)).toEqual([v1.version, v2.version]);
    await expectCode(vault.getSecret('s', 'f'.repeat(32)), 'VAULT_SECRET_NOT_FOUND');
    await expectCode(vault.getSecret('nope'), 'VAULT_SECRET_NOT_FOUND');
    await expectCode(vault.getSecret('file:/elsewhere/secrets/s'), 'VAULT_BAD_ID');
  });

  test('list returns names, versions and attributes, never values', async () => {
    await vault.setSecret('a', 'value-of-a-1234', { contentType: 'text/plain', tags: { k: 'v' } });
    await vault.setSecret('b', 'value-of-b-5678');
    const list = await vault.listSecrets();
    expect(list.map((p) => p.name)).toEqual(['a', 'b']);
    expect(list[0]).toMatchObject({ contentType: 'text/plain', tags: { k: 'v' }, enabled: true });
    const text = JSON.stringify([list, await vault.listSecretVersions('a')]);
    expect(text).not.toContain('value-of-');
    expect(Object.keys(list[0]!)).not.toContain('value');
  });

  test('attributes change without a new value or version', async () => {
    const p = await vault.setSecret('s', 'v');
    const u = await vault.updateSecretProperties('s', undefined, { enabled: false, tags: { a: 'b' }, contentType: 'x/y' });
    expect(u).toMatchObject({ version: p.version, enabled: false, tags: { a: 'b' }, contentType: 'x/y' });
    expect(u.updated.getTime()).toBeGreaterThanOrEqual(p.updated.getTime());
    expect(await vault.listSecretVersions('s')).toHaveLength(1);
    await vault.updateSecretProperties(p.id, undefined, { enabled: true });
    expect((await vault.getSecret('s')).value).toBe('v');
  });
});

describe('enabled, nbf and exp on get', () => {
  test('a disabled secret is refused', async () => {
    await vault.setSecret('s', 'v', { enabled: false });
    await expectCode(vault.getSecret('s'), 'VAULT_SECRET_DISABLED');
  });

  test('before nbf and after exp are refused, each with its code', async () => {
    const now = Date.now();
    await vault.setSecret('future', 'v', { notBefore: new Date(now + HOUR) });
    await expectCode(vault.getSecret('future'), 'VAULT_SECRET_NOT_YET_VALID');
    await vault.setSecret('past', 'v', { expiresOn: new Date(now - 1000) });
    await expectCode(vault.getSecret('past'), 'VAULT_SECRET_EXPIRED');
    await vault.setSecret('window', 'in', { notBefore: new Date(now - HOUR), expiresOn: new Date(now + HOUR) });
    expect((await vault.getSecret('window')).value).toBe('in');
    // Moving the dates (attributes only) changes the outcome.
    await vault.updateSecretProperties('future', undefined, { notBefore: null });
    expect((await vault.getSecret('future')).value).toBe('v');
    await vault.updateSecretProperties('window', undefined, { expiresOn: new Date(now - 1) });
    await expectCode(vault.getSecret('window'), 'VAULT_SECRET_EXPIRED');
  });

  test('an older version keeps its own attributes', async () => {
    const v1 = await vault.setSecret('s', 'old', { enabled: false });
    await vault.setSecret('s', 'new');
    expect((await vault.getSecret('s')).value).toBe('new');
    await expectCode(vault.getSecret('s', v1.version), 'VAULT_SECRET_DISABLED');
  });
});

describe('soft delete, recover, purge', () => {
  test('delete hides the secret until recovered', async () => {
    await vault.setSecret('s', 'v');
    const d = await vault.deleteSecret('s');
    expect(d.scheduledPurgeDate.getTime() - d.deletedOn.getTime()).toBe(90 * 86_400_000);
    await expectCode(vault.getSecret('s'), 'VAULT_DELETED');
    await expectCode(vault.setSecret('s', 'again'), 'VAULT_DELETED');
    expect(await vault.listSecrets()).toEqual([]);
    expect((await vault.listDeletedSecrets()).map((x) => x.name)).toEqual(['s']);
    await vault.recoverDeletedSecret('s');
    expect((await vault.getSecret('s')).value).toBe('v');
    await expectCode(vault.recoverDeletedSecret('s'), 'VAULT_NOT_DELETED');
  });

  test('purge removes every version for good; only a deleted secret can be purged', async () => {
    await vault.setSecret('s', 'v1');
    await vault.setSecret('s', 'v2');
    await expectCode(vault.purgeDeletedSecret('s'), 'VAULT_NOT_DELETED');
    await vault.deleteSecret('s');
    await vault.purgeDeletedSecret('s');
    await expectCode(vault.getSecret('s'), 'VAULT_SECRET_NOT_FOUND');
    await expectCode(vault.recoverDeletedSecret('s'), 'VAULT_SECRET_NOT_FOUND');
    expect(await vault.listDeletedSecrets()).toEqual([]);
    const fresh = await vault.setSecret('s', 'new life');
    expect(await vault.listSecretVersions('s')).toEqual([fresh]);
  });

  test('retention days and purge protection', async () => {
    await expectCode(vault.setProperties({ softDeleteRetentionDays: 6 }), 'VAULT_BAD_ARGUMENT');
    await vault.setProperties({ softDeleteRetentionDays: 7, purgeProtection: true });
    await vault.setSecret('s', 'v');
    const d = await vault.deleteSecret('s');
    expect(d.scheduledPurgeDate.getTime() - d.deletedOn.getTime()).toBe(7 * 86_400_000);
    await expectCode(vault.purgeDeletedSecret('s'), 'VAULT_PURGE_PROTECTED');
    await expectCode(vault.setProperties({ purgeProtection: false }), 'VAULT_BAD_ARGUMENT');
  });
});

describe('backup and restore', () => {
  test('restores every version into the same vault after a purge', async () => {
    const v1 = await vault.setSecret('s', 'one', { tags: { a: '1' } });
    const v2 = await vault.setSecret('s', 'two', { contentType: 'text/plain' });
    const blob = await vault.backupSecret('s');
    expect(Buffer.from(blob).includes(Buffer.from('two'))).toBe(false);
    await expectCode(vault.restoreSecretBackup(blob), 'VAULT_CONFLICT');
    await vault.deleteSecret('s');
    await vault.purgeDeletedSecret('s');
    const r = await vault.restoreSecretBackup(blob);
    expect(r).toMatchObject({ version: v2.version, contentType: 'text/plain' });
    expect((await vault.getSecret('s', v1.version)).value).toBe('one');
    expect((await vault.getSecret('s')).value).toBe('two');
    expect((await vault.getSecret('s', v1.version)).properties.tags).toEqual({ a: '1' });
  });

  test('another vault (another master key) refuses the blob; altered blobs are refused', async () => {
    await vault.setSecret('s', 'v');
    const blob = await vault.backupSecret('s');
    const other = await openVault(`file:${tempDir()}`, { create: true });
    try {
      await expectCode(other.restoreSecretBackup(blob), 'VAULT_BAD_BACKUP');
    } finally {
      await other.close();
    }
    const flipped = Uint8Array.from(blob);
    flipped[flipped.length - 20]! ^= 1;
    await vault.deleteSecret('s');
    await vault.purgeDeletedSecret('s');
    await expectCode(vault.restoreSecretBackup(flipped), 'VAULT_BAD_BACKUP');
    await expectCode(vault.restoreKeyBackup(blob), 'VAULT_BAD_BACKUP');
    await expectCode(vault.restoreSecretBackup(new Uint8Array(3)), 'VAULT_BAD_BACKUP');
    await vault.restoreSecretBackup(blob);
    expect((await vault.getSecret('s')).value).toBe('v');
  });
});

test('object ids use the vault URI and openVault refuses other providers', async () => {
  expect(vault.uri).toBe(`file:${dir}`);
  await expectCode(openVault('http://myvault.vault.azure.net'), 'VAULT_UNSUPPORTED_PROVIDER');
  await expectCode(openVault('https://myvault.vault.azure.net/secrets'), 'VAULT_BAD_ID');
  await expectCode(openVault('hsm:slot0'), 'VAULT_UNSUPPORTED_PROVIDER');
  await expectCode(openVault(`file:${tempDir()}/missing`, { create: false }), 'VAULT_NOT_FOUND');
});

describe('retention', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  test('a soft-deleted secret is purged automatically once its retention has passed', async () => {
    await vault.setProperties({ softDeleteRetentionDays: 7 });
    await vault.setSecret('old', 'v');
    await vault.setSecret('kept', 'v');
    await vault.deleteSecret('old');
    await vault.deleteSecret('kept');
    await vault.close();
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 6 * 86_400_000);
    vault = await openVault(`file:${dir}`);
    expect((await vault.listDeletedSecrets()).map((d) => d.name)).toEqual(['kept', 'old']);
    await vault.recoverDeletedSecret('kept');
    await vault.close();
    vi.setSystemTime(Date.now() + 2 * 86_400_000);
    vault = await openVault(`file:${dir}`);
    expect(await vault.listDeletedSecrets()).toEqual([]);
    await expectCode(vault.getSecret('old'), 'VAULT_SECRET_NOT_FOUND');
    expect((await vault.getSecret('kept')).value).toBe('v');
    const log = await vault.readAudit();
    expect(log.filter((e) => e.operation === 'purgeAfterRetention').map((e) => [e.principal, e.objectId])).toEqual([['system', `file:${dir}/secrets/old`]]);
  });
});

test('a closed handle refuses calls', async () => {
  const v = await openVault(`file:${tempDir()}`, { create: true });
  await v.close();
  await expectCode(v.listSecrets(), 'VAULT_CLOSED');
});

test('opening a vault with nothing due for purging takes no write lock (another process may be writing)', async () => {
  const d = tempDir();
  const v = await openVault(`file:${d}`, { create: true });
  for (const name of ['a', 'b', 'c']) await v.setSecret(name, 'v');
  await v.deleteSecret('a');
  await v.close();
  // Another writer holds the database's write lock for as long as the open below runs.
  const { default: Database } = await import('better-sqlite3');
  const other = new Database(join(d, 'vault.sqlite'));
  other.pragma('busy_timeout = 0');
  other.prepare('BEGIN IMMEDIATE').run();
  let again: Vault;
  try {
    again = await openVault(`file:${d}`);
  } finally {
    other.prepare('ROLLBACK').run();
    other.close();
  }
  // Every call is audited (a write): the lock is released first.
  expect((await again.listDeletedSecrets()).map((x) => x.name)).toEqual(['a']);
  expect((await again.listSecrets()).map((x) => x.name).sort()).toEqual(['b', 'c']);
  await again.close();
});
