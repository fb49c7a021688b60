/** `vhdcrypt vault ...` end to end: the compiled CLI in child processes against a temp $VHDCRYPT_VAULT. */
import { spawnSync } from 'node:child_process';
import { constants, createPrivateKey, generateKeyPairSync, privateDecrypt, randomBytes } from 'node:crypto';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault, sealDiskKey, unsealDiskKey } from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, tempDir } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);

let dir: string;
beforeAll(() => {
  ensureDist(true);
  dir = join(tempDir(), 'vault');
});

function cli(args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const base = { ...process.env };
  delete base.VHDCRYPT_VAULT_TOKEN;
  delete base.VHDCRYPT_VAULT_PASSPHRASE;
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', ...args], {
    env: { ...base, VHDCRYPT_VAULT: dir, ...env },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json<T>(args: string[], env?: Record<string, string>): T {
  const r = cli([...args, '--json'], env);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

describe('vhdcrypt vault', () => {
  test('commands before init say there is no vault (exit 5)', () => {
    const r = cli(['show']);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/VAULT_NOT_FOUND/);
  });

  test('init creates the vault with a 0600 key file; a second init is refused', () => {
    const p = json<{ uri: string; enabledForDiskEncryption: boolean; softDeleteRetentionDays: number }>(['init', '--retention-days', '30']);
    expect(p).toMatchObject({ uri: `file:${dir}`, enabledForDiskEncryption: true, softDeleteRetentionDays: 30 });
    expect(statSync(join(dir, 'master.key')).mode & 0o777).toBe(0o600);
    const again = cli(['init']);
    expect(again.status).toBe(5);
    expect(again.stderr).toMatch(/VAULT_ALREADY_EXISTS/);
  });

  test('secret set/show/list/set-attributes/delete/recover/purge with az-style flags', () => {
    const s = json<{ id: string; version: string; tags: Record<string, string>; expiresOn: string }>([
      'secret', 'set', '--name', 'db', '--value', 's3cret', '--content-type', 'text/plain', '--tags', 'env=prod', 'team=a', '--expires', '2099-01-01T00:00:00Z',
    ]);
    expect(s.id).toBe(`file:${dir}/secrets/db/${s.version}`);
    expect(s.tags).toEqual({ env: 'prod', team: 'a' });
    expect(s.expiresOn).toBe('2099-01-01T00:00:00.000Z');
    expect(cli(['secret', 'show', '--name', 'db']).stdout).toBe('s3cret\n');
    const valueFile = join(tempDir(), 'v.txt');
    writeFileSync(valueFile, 'from a file');
    json(['secret', 'set', '--name', 'db', '--file', valueFile]);
    expect(json<{ value: string }>(['secret', 'show', '--name', 'db']).value).toBe('from a file');
    expect(json<{ value: string }>(['secret', 'show', '--name', 'db', '--version', s.version]).value).toBe('s3cret');
    const versions = json<Array<{ version: string; value?: string }>>(['secret', 'list', '--name', 'db']);
    expect(versions).toHaveLength(2);
    expect(JSON.stringify(versions)).not.toContain('s3cret');

    json(['secret', 'set-attributes', '--name', 'db', '--enabled', 'false']);
    const disabled = cli(['secret', 'show', '--name', 'db']);
    expect(disabled.status).toBe(5);
    expect(disabled.stderr).toMatch(/VAULT_SECRET_DISABLED/);
    json(['secret', 'set-attributes', '--name', 'db', '--enabled', 'true']);
    json(['secret', 'set', '--name', 'later', '--value', 'x', '--not-before', '2099-01-01']);
    expect(cli(['secret', 'show', '--name', 'later']).stderr).toMatch(/VAULT_SECRET_NOT_YET_VALID/);
    json(['secret', 'set', '--name', 'off', '--value', 'x', '--disabled']);
    expect(cli(['secret', 'show', '--name', 'off']).stderr).toMatch(/VAULT_SECRET_DISABLED/);

    json(['secret', 'delete', '--name', 'db']);
    expect(json<Array<{ name: string }>>(['secret', 'list', '--deleted']).map((d) => d.name)).toEqual(['db']);
    json(['secret', 'recover', '--name', 'db']);
    expect(cli(['secret', 'show', '--name', 'db']).stdout).toBe('from a file\n');
    json(['secret', 'delete', '--name', 'db']);
    json(['secret', 'purge', '--name', 'db']);
    expect(cli(['secret', 'show', '--name', 'db']).stderr).toMatch(/VAULT_SECRET_NOT_FOUND/);

    for (const bad of [['--expires', 'tomorrow'], ['--tags', 'novalue']]) {
      const r = cli(['secret', 'set', '--name', 'x', '--value', 'v', ...bad]);
      expect(r.status).toBe(2); // a usage error: the value typed is not one
      expect(r.stderr).toMatch(/VAULT_BAD_ARGUMENT/);
    }
    const badName = cli(['secret', 'set', '--name', 'bad_name', '--value', 'v']);
    expect(badName.stderr).toMatch(/VAULT_BAD_NAME/);
    expect(badName.status).toBe(2);
    expect(cli(['secret', 'set', '--name', 'big', '--value', 'x'.repeat(10241)]).stderr).toMatch(/VAULT_VALUE_TOO_LARGE/);
  });

  test('key import/show/rotate/backup/restore; show prints the public part only', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = privateKey.export({ format: 'jwk' });
    const jwkFile = join(tempDir(), 'k.json');
    writeFileSync(jwkFile, JSON.stringify(jwk));
    const imported = json<{ key: Record<string, unknown>; properties: { id: string } }>(['key', 'import', '--name', 'rsa', '--file', jwkFile]);
    expect(Object.keys(imported.key).sort()).toEqual(['e', 'key_ops', 'kid', 'kty', 'n']);
    const shown = cli(['key', 'show', '--name', 'rsa']);
    expect(shown.status).toBe(0);
    for (const f of ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const) expect(shown.stdout).not.toContain(String(jwk[f]));
    const rotated = json<{ properties: { version: string } }>(['key', 'rotate', '--name', 'rsa']);
    expect(json<unknown[]>(['key', 'list', '--name', 'rsa'])).toHaveLength(2);
    json(['key', 'create', '--name', 'oct', '--kty', 'oct', '--tags', 'use=test']);
    expect(json<{ properties: { keySize: number } }>(['key', 'show', '--name', 'oct']).properties.keySize).toBe(256);

    const backupFile = join(tempDir(), 'rsa.bak');
    json(['key', 'backup', '--name', 'rsa', '--file', backupFile]);
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);
    json(['key', 'delete', '--name', 'rsa']);
    json(['key', 'purge', '--name', 'rsa']);
    expect(cli(['key', 'show', '--name', 'rsa']).stderr).toMatch(/VAULT_KEY_NOT_FOUND/);
    const restored = json<{ version: string }>(['key', 'restore', '--file', backupFile]);
    expect(restored.version).toBe(rotated.properties.version);
    // The restored first version is still the imported key: node:crypto decrypts what the vault wraps with it.
    return (async () => {
      const v = await openVault(`file:${dir}`, { create: false });
      try {
        const dek = randomBytes(32);
        const w = await v.wrapKey(imported.properties.id, 'RSA-OAEP', dek);
        const plain = privateDecrypt({ key: createPrivateKey({ key: jwk, format: 'jwk' }), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, w.result);
        expect(plain.equals(dek)).toBe(true);
      } finally {
        await v.close();
      }
      // Another vault refuses the backup.
      const otherDir = join(tempDir(), 'other');
      expect(cli(['init'], { VHDCRYPT_VAULT: otherDir }).status).toBe(0);
      const r = cli(['key', 'restore', '--file', backupFile], { VHDCRYPT_VAULT: otherDir });
      expect(r.status).toBe(5);
      expect(r.stderr).toMatch(/VAULT_BAD_BACKUP/);
    })();
  });

  test('principals, policies and tokens through $VHDCRYPT_VAULT_TOKEN; the audit log names them', () => {
    const token = cli(['principal', 'add', '--name', 'reader']).stdout.trim();
    expect(token).toMatch(/^reader\./);
    json(['secret', 'set', '--name', 'shared', '--value', 'for-reader']);
    const denied = cli(['secret', 'show', '--name', 'shared'], { VHDCRYPT_VAULT_TOKEN: token });
    expect(denied.status).toBe(5);
    expect(denied.stderr).toMatch(/VAULT_FORBIDDEN/);
    json(['policy', 'set', '--principal', 'reader', '--secret-permissions', 'get', 'list']);
    expect(json<Array<{ principal: string; secrets: string[] }>>(['policy', 'list'])).toEqual([{ principal: 'reader', secrets: ['get', 'list'], keys: [] }]);
    expect(cli(['secret', 'show', '--name', 'shared'], { VHDCRYPT_VAULT_TOKEN: token }).stdout).toBe('for-reader\n');
    expect(cli(['secret', 'set', '--name', 'shared', '--value', 'x'], { VHDCRYPT_VAULT_TOKEN: token }).stderr).toMatch(/VAULT_FORBIDDEN/);
    expect(cli(['audit'], { VHDCRYPT_VAULT_TOKEN: token }).stderr).toMatch(/VAULT_FORBIDDEN/);
    json(['policy', 'delete', '--principal', 'reader']);
    expect(cli(['secret', 'show', '--name', 'shared'], { VHDCRYPT_VAULT_TOKEN: token }).stderr).toMatch(/VAULT_FORBIDDEN/);
    json(['principal', 'remove', '--name', 'reader']);
    expect(cli(['secret', 'show', '--name', 'shared'], { VHDCRYPT_VAULT_TOKEN: token }).stderr).toMatch(/VAULT_UNAUTHENTICATED/);
    const audit = json<Array<{ principal: string; operation: string; result: string }>>(['audit']);
    expect(audit.filter((e) => e.principal === 'reader').map((e) => `${e.operation}:${e.result}`)).toEqual([
      'getSecret:VAULT_FORBIDDEN', 'getSecret:ok', 'setSecret:VAULT_FORBIDDEN', 'readAudit:VAULT_FORBIDDEN', 'getSecret:VAULT_FORBIDDEN',
      'authenticate:VAULT_UNAUTHENTICATED',
    ]);
    expect(JSON.stringify(audit)).not.toContain('for-reader');
  });

  test('set-property and rotate-kek over disk keys sealed through the library', async () => {
    const v = await openVault(`file:${dir}`, { create: false });
    const material = randomBytes(64);
    const sealed = await sealDiskKey(v, { diskId: 'disk-a', material, kek: 'disk-kek' });
    await v.close();
    const r = json<{ kekId: string; rewrapped: string[]; disabled: string[] }>(['rotate-kek', 'disk-kek']);
    expect(r.rewrapped).toHaveLength(1);
    expect(r.disabled).toEqual([sealed.kekId]);
    json(['set-property', '--enabled-for-disk-encryption', 'false']);
    expect(json<{ enabledForDiskEncryption: boolean }>(['show']).enabledForDiskEncryption).toBe(false);
    const again = await openVault(`file:${dir}`, { create: false });
    try {
      expect(Buffer.from(await unsealDiskKey(again, sealed.secretId)).equals(material)).toBe(true);
      await expect(sealDiskKey(again, { diskId: 'disk-b', material, kek: 'disk-kek' })).rejects.toMatchObject({ code: 'VAULT_NOT_FOR_DISK_ENCRYPTION' });
    } finally {
      await again.close();
    }
    expect(cli(['rotate-kek', 'no-such-kek']).stderr).toMatch(/VAULT_KEY_NOT_FOUND/);
    expect(existsSync(join(dir, 'vault.sqlite'))).toBe(true);
  });

  test('a passphrase vault needs $VHDCRYPT_VAULT_PASSPHRASE', () => {
    const pdir = join(tempDir(), 'pv');
    const env = { VHDCRYPT_VAULT: pdir, VHDCRYPT_VAULT_PASSPHRASE: 'pw', VHDCRYPT_VAULT_KDF_MEMORY_KIB: '64', VHDCRYPT_VAULT_KDF_ITERATIONS: '1' };
    expect(cli(['init'], env).status).toBe(0);
    expect(existsSync(join(pdir, 'master.key'))).toBe(false);
    expect(cli(['secret', 'set', '--name', 's', '--value', 'v'], env).status).toBe(0);
    expect(cli(['secret', 'show', '--name', 's'], { VHDCRYPT_VAULT: pdir }).stderr).toMatch(/VAULT_PASSPHRASE_REQUIRED/);
    expect(cli(['secret', 'show', '--name', 's'], { ...env, VHDCRYPT_VAULT_PASSPHRASE: 'nope' }).stderr).toMatch(/VAULT_WRONG_MASTER_KEY/);
    const ok = cli(['secret', 'show', '--name', 's'], env);
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toBe('v\n');
  });
});
