/**
 * The embedded vault's storage: encryption at rest (checked by decrypting a row
 * with argon2id + HKDF + AES-GCM from node:crypto, as documented), tamper and
 * row-swap detection, the master key file rules, and two processes writing at once.
 */
import { spawn } from 'node:child_process';
import { createDecipheriv, hkdfSync } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Algorithm, hashRawSync } from '@node-rs/argon2';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);
const SMALL_KDF = { memoryKiB: 64, iterations: 1, parallelism: 1 };

function db(dir: string): Database.Database {
  return new Database(join(dir, 'vault.sqlite'));
}

describe('encryption at rest', () => {
  test('a passphrase vault row decrypts with argon2id -> HKDF-SHA256 -> AES-256-GCM and its row identity as AAD', async () => {
    const dir = tempDir();
    const v = await openVault(`file:${dir}`, { passphrase: 'correct horse', kdf: SMALL_KDF, create: true });
    const s = await v.setSecret('MySecret', 'the value at rest');
    await v.close();
    expect(existsSync(join(dir, 'master.key'))).toBe(false);
    const d = db(dir);
    const meta = Object.fromEntries((d.prepare('SELECT k, v FROM meta').all() as Array<{ k: string; v: unknown }>).map((r) => [r.k, r.v]));
    const row = d.prepare("SELECT material FROM versions WHERE kind = 'secrets' AND name = 'MySecret'").get() as { material: Buffer };
    d.close();
    expect(meta.key_source).toBe('passphrase');
    const kdf = JSON.parse(String(meta.kdf)) as { salt: string; memoryKiB: number; iterations: number; parallelism: number };
    expect(kdf).toMatchObject(SMALL_KDF);
    const master = hashRawSync('correct horse', {
      algorithm: Algorithm.Argon2id, memoryCost: kdf.memoryKiB, timeCost: kdf.iterations, parallelism: kdf.parallelism, outputLen: 32,
      salt: Buffer.from(kdf.salt, 'base64'),
    });
    const recordKey = Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), 'vhdcrypt vault records v1', 32));
    const open = (aad: string): string => {
      const dc = createDecipheriv('aes-256-gcm', recordKey, row.material.subarray(0, 12));
      dc.setAAD(Buffer.from(aad));
      dc.setAuthTag(row.material.subarray(row.material.length - 16));
      return Buffer.concat([dc.update(row.material.subarray(12, row.material.length - 16)), dc.final()]).toString();
    };
    expect(open(`vhdcrypt-vault/v1|${String(meta.vault_id)}|versions|secrets|mysecret|${s.version}|material`)).toBe('the value at rest');
    expect(() => open(`vhdcrypt-vault/v1|${String(meta.vault_id)}|versions|secrets|other|${s.version}|material`)).toThrow();
  });

  test('passphrase rules: wrong passphrase, missing passphrase, $VHDCRYPT_VAULT_PASSPHRASE', async () => {
    const dir = tempDir();
    await (await openVault(`file:${dir}`, { passphrase: 'pw', kdf: SMALL_KDF, create: true })).close();
    await expectCode(openVault(`file:${dir}`, { passphrase: 'wrong' }), 'VAULT_WRONG_MASTER_KEY');
    const saved = process.env.VHDCRYPT_VAULT_PASSPHRASE;
    delete process.env.VHDCRYPT_VAULT_PASSPHRASE;
    try {
      await expectCode(openVault(`file:${dir}`), 'VAULT_PASSPHRASE_REQUIRED');
      process.env.VHDCRYPT_VAULT_PASSPHRASE = 'pw';
      await (await openVault(`file:${dir}`)).close();
    } finally {
      if (saved === undefined) delete process.env.VHDCRYPT_VAULT_PASSPHRASE;
      else process.env.VHDCRYPT_VAULT_PASSPHRASE = saved;
    }
  });

  test('the default key file is created with mode 0600 and guarded', async () => {
    const dir = tempDir();
    const v = await openVault(`file:${dir}`, { create: true });
    await v.setSecret('s', 'plaintext-marker-123');
    await v.close();
    const keyPath = join(dir, 'master.key');
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(keyPath).size).toBe(32);
    // The database and SQLite's WAL beside it are private too, even in a directory that is not.
    chmodSync(dir, 0o755);
    for (const f of ['vault.sqlite', 'vault.sqlite-wal']) {
      if (existsSync(join(dir, f))) expect(statSync(join(dir, f)).mode & 0o777, f).toBe(0o600);
    }
    expect(statSync(join(dir, 'vault.sqlite')).mode & 0o777).toBe(0o600);
    // A vault file left group/world-readable (made by an older version) is made private when opened.
    chmodSync(join(dir, 'vault.sqlite'), 0o644);
    await (await openVault(`file:${dir}`)).close();
    expect(statSync(join(dir, 'vault.sqlite')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(dir, 'vault.sqlite')).includes(Buffer.from('plaintext-marker-123'))).toBe(false);
    chmodSync(keyPath, 0o644);
    await expectCode(openVault(`file:${dir}`), 'VAULT_KEY_FILE_PERMISSIONS');
    chmodSync(keyPath, 0o600);
    const original = readFileSync(keyPath);
    writeFileSync(keyPath, Buffer.alloc(32, 7));
    await expectCode(openVault(`file:${dir}`), 'VAULT_WRONG_MASTER_KEY');
    writeFileSync(keyPath, original.subarray(0, 16));
    await expectCode(openVault(`file:${dir}`), 'VAULT_WRONG_MASTER_KEY');
    writeFileSync(keyPath, original);
    expect((await (await openVault(`file:${dir}`)).getSecret('s')).value).toBe('plaintext-marker-123');
  });
});

describe('tampering is detected', () => {
  async function twoSecrets(): Promise<string> {
    const dir = tempDir();
    const v = await openVault(`file:${dir}`, { create: true });
    await v.setSecret('a', 'value-a');
    await v.setSecret('b', 'value-b');
    await v.createKey('k', { kty: 'oct' });
    await v.close();
    return dir;
  }

  test('a flipped bit in a stored value', async () => {
    const dir = await twoSecrets();
    const d = db(dir);
    const row = d.prepare("SELECT seq, material FROM versions WHERE name = 'a'").get() as { seq: number; material: Buffer };
    row.material[20]! ^= 0x01;
    d.prepare('UPDATE versions SET material = ? WHERE seq = ?').run(row.material, row.seq);
    d.close();
    const v = await openVault(`file:${dir}`);
    const err = await expectCode(v.getSecret('a'), 'VAULT_TAMPERED');
    expect(err.message).toContain('secrets/a/');
    expect((await v.getSecret('b')).value).toBe('value-b');
    await v.close();
  });

  test('ciphertexts swapped between rows (values, records, key material)', async () => {
    const dir = await twoSecrets();
    const d = db(dir);
    const a = d.prepare("SELECT seq, record, material FROM versions WHERE name = 'a'").get() as { seq: number; record: Buffer; material: Buffer };
    const b = d.prepare("SELECT seq, record, material FROM versions WHERE name = 'b'").get() as { seq: number; record: Buffer; material: Buffer };
    const k = d.prepare("SELECT seq, material FROM versions WHERE name = 'k'").get() as { seq: number; material: Buffer };
    d.prepare('UPDATE versions SET material = ? WHERE seq = ?').run(b.material, a.seq);
    d.prepare('UPDATE versions SET record = ? WHERE seq = ?').run(a.record, b.seq);
    d.prepare('UPDATE versions SET material = ? WHERE seq = ?').run(a.material, k.seq);
    d.close();
    const v = await openVault(`file:${dir}`);
    await expectCode(v.getSecret('a'), 'VAULT_TAMPERED');
    await expectCode(v.getSecret('b'), 'VAULT_TAMPERED');
    await expectCode(v.listSecrets(), 'VAULT_TAMPERED');
    await expectCode(v.wrapKey('k', 'A256KW', new Uint8Array(32)), 'VAULT_TAMPERED');
    await v.close();
  });

  test('edited vault properties, policies and a vault file that is not a database', async () => {
    const dir = await twoSecrets();
    const v0 = await openVault(`file:${dir}`);
    await v0.addPrincipal('app');
    await v0.close();
    const d = db(dir);
    const props = d.prepare("SELECT v FROM meta WHERE k = 'properties'").get() as { v: Buffer };
    props.v[props.v.length - 1]! ^= 0x80;
    d.prepare("UPDATE meta SET v = ? WHERE k = 'properties'").run(props.v);
    const p = d.prepare("SELECT record FROM principals WHERE name = 'app'").get() as { record: Buffer };
    p.record[15]! ^= 0x04;
    d.prepare("UPDATE principals SET record = ? WHERE name = 'app'").run(p.record);
    d.pragma('wal_checkpoint(TRUNCATE)');
    d.close();
    const v = await openVault(`file:${dir}`);
    await expectCode(v.getProperties(), 'VAULT_TAMPERED');
    await expectCode(v.listPrincipals(), 'VAULT_TAMPERED');
    await v.close();
    const file = join(dir, 'vault.sqlite');
    const bytes = readFileSync(file);
    bytes.fill(0x5a, 0, 100);
    writeFileSync(file, bytes);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });
});

describe('two processes at once', () => {
  let mod: string;
  beforeAll(() => {
    mod = ensureDist();
  });

  test('two child processes create and write one vault concurrently and lose no update', async () => {
    const dir = join(tempDir(), 'fresh');
    const N = 120;
    const run = (id: string) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, 'test', 'fixtures', 'vault', 'hammer-child.mjs'), mod, `file:${dir}`, id, String(N)]);
      let out = '';
      let err = '';
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (err += c));
      child.on('close', (code) => resolve({ code, out, err }));
    });
    const results = await Promise.all([run('A'), run('B')]);
    for (const r of results) expect(r.code, r.err).toBe(0);
    const v = await openVault(`file:${dir}`);
    const versions = await v.listSecretVersions('shared');
    expect(versions).toHaveLength(2 * N);
    const values = new Set<string>();
    for (const p of versions) values.add((await v.getSecret('shared', p.version)).value);
    for (const id of ['A', 'B']) for (let i = 0; i < N; i++) expect(values.has(`${id}-${i}`)).toBe(true);
    expect(await v.listSecretVersions('own-A')).toHaveLength(N);
    expect(await v.listSecretVersions('own-B')).toHaveLength(N);
    const audit = await v.readAudit();
    expect(audit.filter((e) => e.operation === 'setSecret' && e.result === 'ok')).toHaveLength(4 * N);
    await v.close();
  });
});
