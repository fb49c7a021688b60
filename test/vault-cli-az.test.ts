/**
 * `vhdcrypt vault ...` takes what `az keyvault` users type: -n, --id, --enabled/--disabled, list-versions,
 * list-deleted, show-deleted, download, -o json|table|tsv, key encrypt/decrypt/wrap/unwrap, --file with
 * --encoding. The compiled CLI in child processes against a temp $VHDCRYPT_VAULT; node:crypto is the oracle.
 */
import { spawnSync } from 'node:child_process';
import {
  constants, createDecipheriv, createPrivateKey, createPublicKey, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes,
  type JsonWebKey,
} from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, tempDir } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);

let dir: string;
beforeAll(() => {
  ensureDist(true);
  dir = join(tempDir(), 'vault');
  expect(cli(['init']).status).toBe(0);
});

interface Run { status: number | null; stdout: string; stderr: string }

function cli(args: string[], opts: { env?: Record<string, string>; input?: Buffer | string } = {}): Run {
  const base = { ...process.env };
  delete base.VHDCRYPT_VAULT_TOKEN;
  delete base.VHDCRYPT_VAULT_PASSPHRASE;
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', ...args], {
    env: { ...base, VHDCRYPT_VAULT: dir, ...opts.env },
    encoding: 'utf8',
    input: opts.input ?? '',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[], opts?: { env?: Record<string, string>; input?: Buffer | string }): string {
  const r = cli(args, opts);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

function json<T>(args: string[], opts?: { env?: Record<string, string>; input?: Buffer | string }): T {
  return JSON.parse(ok([...args, '-o', 'json'], opts)) as T;
}

/** A usage error (exit 2) with this code. */
function refused(args: string[], code = 'VAULT_BAD_ARGUMENT', status = 2, opts?: { env?: Record<string, string>; input?: Buffer | string }): Run {
  const r = cli(args, opts);
  expect(r.stderr).toMatch(new RegExp(code));
  expect(r.status, r.stderr).toBe(status);
  return r;
}

/** Bytes that are not UTF-8: 0xff never appears in UTF-8, and a lone continuation byte. */
function binary(): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0x80, 0x00]), randomBytes(61)]);
}

interface SecretJson { id: string; name: string; version: string; enabled: boolean; tags: Record<string, string>; value?: string }
interface KeyJson { key: { kid: string; kty: string; n?: string; e?: string }; properties: { id: string; version: string; enabled: boolean } }

describe('vault secret --file and --encoding', () => {
  test('a binary file is refused unless --encoding base64 (no U+FFFD in the vault); download gives the bytes back', () => {
    const bytes = binary();
    const file = join(tempDir(), 'bin.dat');
    writeFileSync(file, bytes);
    const r = refused(['secret', 'set', '-n', 'bin', '--file', file]);
    expect(r.stderr).toMatch(/not UTF-8 text.*--encoding base64/);
    refused(['secret', 'show', '-n', 'bin'], 'VAULT_SECRET_NOT_FOUND', 5);
    refused(['secret', 'set', '-n', 'bin', '--file', file, '--encoding', 'ascii']);
    // The same bytes on stdin are refused too.
    refused(['secret', 'set', '-n', 'bin', '--value', '-'], 'VAULT_BAD_ARGUMENT', 2, { input: bytes });
    refused(['secret', 'set', '-n', 'bin', '--file', file, '--encoding', 'latin1']);
    refused(['secret', 'set', '-n', 'bin', '--value', 'x', '--encoding', 'base64']);

    const s = json<SecretJson>(['secret', 'set', '-n', 'bin', '--file', file, '--encoding', 'base64']);
    expect(s.tags).toEqual({ 'file-encoding': 'base64' });
    expect(json<SecretJson>(['secret', 'show', '-n', 'bin']).value).toBe(bytes.toString('base64'));

    const out = join(tempDir(), 'out.dat');
    ok(['secret', 'download', '-n', 'bin', '--file', out]);
    expect(readFileSync(out).equals(bytes)).toBe(true);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    // An existing file is not overwritten.
    refused(['secret', 'download', '-n', 'bin', '--file', out]);
    expect(readFileSync(out).equals(bytes)).toBe(true);
    // --encoding utf-8 overrides the tag: the stored base64 text itself.
    const asText = join(tempDir(), 'out.txt');
    ok(['secret', 'download', '--id', s.id, '--file', asText, '--encoding', 'utf-8']);
    expect(readFileSync(asText, 'utf8')).toBe(bytes.toString('base64'));

    // UTF-8 text files are stored as they are (with the tag az puts on them).
    const text = join(tempDir(), 'text.txt');
    writeFileSync(text, 'grüße\n');
    expect(json<SecretJson>(['secret', 'set', '-n', 'text', '-f', text]).tags).toEqual({ 'file-encoding': 'utf-8' });
    expect(ok(['secret', 'show', '-n', 'text'])).toBe('grüße\n\n');
    refused(['secret', 'set', '-n', 'text', '-f', text, '-e', 'ascii']);
  });
});

describe('vault secret -n, --id, --enabled/--disabled, list-versions, list-deleted, show-deleted', () => {
  test('--id names a secret (and version) instead of --name/--version, and is refused with them', () => {
    const v1 = json<SecretJson>(['secret', 'set', '-n', 'db', '--value', 'one']);
    const v2 = json<SecretJson>(['secret', 'set', '--name', 'db', '--value', 'two']);
    expect(ok(['secret', 'show', '--id', v1.id])).toBe('one\n');
    expect(ok(['secret', 'show', '--id', `file:${dir}/secrets/db`])).toBe('two\n');
    expect(ok(['secret', 'show', '-n', 'db', '--version', v1.version])).toBe('one\n');
    refused(['secret', 'show', '--id', v1.id, '-n', 'db']);
    refused(['secret', 'show', '--id', v1.id, '--version', v2.version]);
    refused(['secret', 'show', '--id', 'db']);
    refused(['secret', 'show']);
    refused(['secret', 'show', '--id', `file:/elsewhere/secrets/db/${v1.version}`], 'VAULT_BAD_ID');

    // set-attributes on one version through its id; --disabled and --enabled both spell it.
    expect(json<SecretJson>(['secret', 'set-attributes', '--id', v1.id, '--disabled', 'true']).enabled).toBe(false);
    refused(['secret', 'show', '--id', v1.id], 'VAULT_SECRET_DISABLED', 5);
    expect(ok(['secret', 'show', '-n', 'db'])).toBe('two\n');
    expect(json<SecretJson>(['secret', 'set-attributes', '--id', v1.id, '--disabled', 'false']).enabled).toBe(true);
    expect(json<SecretJson>(['secret', 'set-attributes', '-n', 'db', '--version', v1.version, '--enabled', 'false']).enabled).toBe(false);
    expect(json<SecretJson>(['secret', 'set-attributes', '-n', 'db', '--version', v1.version, '--disabled']).enabled).toBe(false);
    refused(['secret', 'set-attributes', '-n', 'db', '--enabled', 'true', '--disabled', 'true']);
    refused(['secret', 'set-attributes', '-n', 'db', '--disabled', 'maybe']);
    expect(json<SecretJson>(['secret', 'set', '-n', 'off', '--value', 'x', '--disabled', 'true']).enabled).toBe(false);
    expect(json<SecretJson>(['secret', 'set', '-n', 'on', '--value', 'x', '--disabled', 'false']).enabled).toBe(true);
    expect(json<SecretJson>(['secret', 'set', '-n', 'off2', '--value', 'x', '--enabled', 'false']).enabled).toBe(false);
    refused(['secret', 'set', '-n', 'x', '--value', 'x', '--enabled', 'false', '--disabled', 'false']);

    const versions = json<SecretJson[]>(['secret', 'list-versions', '-n', 'db']);
    expect(versions.map((x) => x.version)).toEqual([v1.version, v2.version]);
    expect(json<SecretJson[]>(['secret', 'list-versions', '--id', `file:${dir}/secrets/db`])).toEqual(versions);
    // A whole-object verb refuses an id with a version.
    refused(['secret', 'list-versions', '--id', v1.id]);

    ok(['secret', 'delete', '--id', `file:${dir}/secrets/db`]);
    const deleted = json<Array<{ name: string; properties: SecretJson }>>(['secret', 'list-deleted']);
    expect(deleted.map((d) => d.name)).toEqual(['db']);
    expect(JSON.stringify(deleted)).not.toContain('two');
    const shown = json<{ id: string; name: string; deletedOn: string; scheduledPurgeDate: string }>(['secret', 'show-deleted', '-n', 'db']);
    expect(shown).toMatchObject({ name: 'db', id: `file:${dir}/secrets/db` });
    expect(Date.parse(shown.scheduledPurgeDate)).toBeGreaterThan(Date.parse(shown.deletedOn));
    refused(['secret', 'show-deleted', '-n', 'text'], 'VAULT_SECRET_NOT_FOUND', 5);
    ok(['secret', 'recover', '--id', `file:${dir}/secrets/db`]);
    expect(ok(['secret', 'show', '-n', 'db'])).toBe('two\n');
    expect(json<unknown[]>(['secret', 'list-deleted'])).toEqual([]);

    // backup with --id; principals take -n.
    const bak = join(tempDir(), 'db.bak');
    ok(['secret', 'backup', '--id', `file:${dir}/secrets/db`, '-f', bak]);
    expect(existsSync(bak)).toBe(true);
    expect(ok(['principal', 'add', '-n', 'someone'])).toMatch(/^someone\./);
  });
});

describe('vault -o json|table|tsv', () => {
  test('one format per command: json is one document, table has a header and aligned columns, tsv has neither header nor escapes lost', () => {
    ok(['secret', 'set', '-n', 'fmt', '--value', 'a\tb', '--tags', 'env=prod', 'team=a']);
    ok(['secret', 'set', '-n', 'fmt', '--value', 'second', '--content-type', 'text/plain']);
    const list = json<SecretJson[]>(['secret', 'list-versions', '-n', 'fmt']);
    expect(list).toHaveLength(2);
    expect(JSON.parse(ok(['secret', 'list-versions', '-n', 'fmt', '--json']))).toEqual(list);

    const table = ok(['secret', 'list-versions', '-n', 'fmt', '-o', 'table']).split('\n').filter((l) => l !== '');
    expect(table).toHaveLength(4);
    const header = table[0]!.split(/ {2,}/);
    expect(header.slice(0, 3)).toEqual(['id', 'name', 'version']);
    expect(table[1]).toMatch(/^-+( {2}-+)+$/);
    // Every column starts where its header does.
    const starts = header.map((h) => table[0]!.indexOf(h));
    for (const row of table.slice(2)) for (const s of starts.slice(1)) expect(row[s - 1]).toBe(' ');
    expect(table[2]!.startsWith(list[0]!.id)).toBe(true);
    expect(table[3]).toContain('text/plain');

    const tsv = ok(['secret', 'list-versions', '-n', 'fmt', '-o', 'tsv']).split('\n').filter((l) => l !== '');
    expect(tsv).toHaveLength(2);
    const rows = tsv.map((l) => l.split('\t'));
    expect(rows[0]![0]).toBe(list[0]!.id);
    expect(rows[0]).toHaveLength(rows[1]!.length);
    expect(rows[0]).toContain('env=prod,team=a');
    // A value with a tab stays in one field.
    const value = ok(['secret', 'show', '-n', 'fmt', '--version', list[0]!.version, '-o', 'tsv']).trimEnd().split('\t');
    expect(value[value.length - 1]).toBe('a\\tb');

    refused(['secret', 'list-versions', '-n', 'fmt', '-o', 'yaml']);
    refused(['secret', 'list-versions', '-n', 'fmt', '--json', '-o', 'table']);
    // A refused format changes nothing.
    refused(['secret', 'set', '-n', 'fmt', '--value', 'third', '-o', 'xml']);
    expect(json<SecretJson[]>(['secret', 'list-versions', '-n', 'fmt'])).toHaveLength(2);
  });

  test('key show prints one format: plain name: value lines, or one JSON document, or one table row', () => {
    const created = json<KeyJson>(['key', 'create', '-n', 'shown']);
    const plain = ok(['key', 'show', '-n', 'shown']);
    const lines = plain.trimEnd().split('\n');
    for (const l of lines) expect(l).toMatch(/^[A-Za-z_]+: /);
    expect(lines).toContain(`kid: ${created.key.kid}`);
    expect(lines).toContain('kty: RSA');
    expect(lines).toContain('keySize: 2048');
    const doc = JSON.parse(ok(['key', 'show', '-n', 'shown', '-o', 'json'])) as KeyJson;
    expect(doc.key.kid).toBe(created.key.kid);
    const table = ok(['key', 'show', '-n', 'shown', '-o', 'table']).trimEnd().split('\n');
    expect(table).toHaveLength(3);
    expect(table[0]!.split(/ +/).slice(0, 2)).toEqual(['kid', 'kty']);
    const tsv = ok(['key', 'show', '-n', 'shown', '-o', 'tsv']).trimEnd().split('\n');
    expect(tsv).toHaveLength(1);
    expect(tsv[0]!.split('\t')[0]).toBe(created.key.kid);
  });
});

describe('vault key encrypt|decrypt|wrap|unwrap, list-versions, list-deleted, show-deleted', () => {
  test('RSA-OAEP and RSA-OAEP-256 round trips against node:crypto, both ways', () => {
    // A created key: node:crypto encrypts with the public JWK from `key show`, the CLI decrypts.
    const created = json<KeyJson>(['key', 'show', '-n', 'shown']);
    const pub = createPublicKey({ key: { kty: 'RSA', n: created.key.n!, e: created.key.e! }, format: 'jwk' });
    for (const [alg, hash] of [['RSA-OAEP', 'sha1'], ['RSA-OAEP-256', 'sha256']] as const) {
      const data = randomBytes(32);
      const ct = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, data);
      const r = json<{ kid: string; result: string; algorithm: string }>(['key', 'decrypt', '-n', 'shown', '--algorithm', alg, '--value', ct.toString('base64')]);
      expect(r).toEqual({ kid: created.properties.id, result: data.toString('base64'), algorithm: alg });
    }

    // An imported key: the CLI encrypts, node:crypto decrypts with the private key it generated.
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwkFile = join(tempDir(), 'rsa.json');
    writeFileSync(jwkFile, JSON.stringify(privateKey.export({ format: 'jwk' })));
    const imported = json<KeyJson>(['key', 'import', '-n', 'imp', '-f', jwkFile]);
    for (const [alg, hash] of [['RSA-OAEP', 'sha1'], ['RSA-OAEP-256', 'sha256']] as const) {
      const data = randomBytes(48);
      const r = json<{ kid: string; result: string; algorithm: string }>(['key', 'encrypt', '-n', 'imp', '-a', alg, '--value', data.toString('base64')]);
      expect(r.kid).toBe(imported.properties.id);
      expect(r.algorithm).toBe(alg);
      const plain = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, Buffer.from(r.result, 'base64'));
      expect(plain.equals(data)).toBe(true);
    }

    // --data-type plaintext both ways, through --id (with its version) and --value - (stdin); plain output is the result alone.
    const ct = ok(['key', 'encrypt', '--id', imported.properties.id, '-a', 'RSA-OAEP-256', '--value', '-', '--data-type', 'plaintext'], { input: 'hello vault\n' }).trim();
    expect(privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, Buffer.from(ct, 'base64')).toString()).toBe('hello vault');
    expect(ok(['key', 'decrypt', '-n', 'imp', '--version', imported.properties.version, '-a', 'RSA-OAEP-256', '--value', ct, '--data-type', 'plaintext'])).toBe('hello vault\n');
    // A result that is not text is refused as plaintext, not printed as U+FFFD.
    const bin = publicEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, binary().subarray(0, 32));
    refused(['key', 'decrypt', '-n', 'imp', '-a', 'RSA-OAEP-256', '--value', bin.toString('base64'), '--data-type', 'plaintext']);

    // Bad input: not base64, an unknown or inapplicable algorithm, a damaged ciphertext, --id with --name.
    refused(['key', 'encrypt', '-n', 'imp', '-a', 'RSA-OAEP', '--value', 'not base64!']);
    refused(['key', 'encrypt', '-n', 'imp', '-a', 'RSA1_5', '--value', 'AAAA'], 'VAULT_UNSUPPORTED_ALGORITHM', 7);
    refused(['key', 'encrypt', '-n', 'imp', '-a', 'A256KW', '--value', 'AAAA'], 'VAULT_UNSUPPORTED_ALGORITHM', 7);
    const damaged = Buffer.from(ct, 'base64');
    damaged[10] ^= 1;
    refused(['key', 'decrypt', '-n', 'imp', '-a', 'RSA-OAEP-256', '--value', damaged.toString('base64')], 'VAULT_UNWRAP_FAILED', 5);
    refused(['key', 'encrypt', '-n', 'imp', '--id', imported.properties.id, '-a', 'RSA-OAEP', '--value', 'AAAA']);
  });

  test('A256KW wrap/unwrap with an imported oct key against node:crypto; encrypt refuses it; audit and permissions', () => {
    const k = randomBytes(32);
    const jwk: JsonWebKey = { kty: 'oct', k: k.toString('base64url') };
    const file = join(tempDir(), 'oct.json');
    writeFileSync(file, JSON.stringify(jwk));
    const imported = json<KeyJson>(['key', 'import', '-n', 'kw', '-f', file]);
    const dek = randomBytes(32);
    const w = json<{ kid: string; result: string; algorithm: string }>(['key', 'wrap', '-n', 'kw', '-a', 'A256KW', '--value', dek.toString('base64')]);
    expect(w.kid).toBe(imported.properties.id);
    const d = createDecipheriv('id-aes256-wrap', k, Buffer.alloc(8, 0xa6));
    expect(Buffer.concat([d.update(Buffer.from(w.result, 'base64')), d.final()]).equals(dek)).toBe(true);
    expect(ok(['key', 'unwrap', '-n', 'kw', '-a', 'A256KW', '--value', w.result]).trim()).toBe(dek.toString('base64'));
    refused(['key', 'encrypt', '-n', 'kw', '-a', 'RSA-OAEP', '--value', dek.toString('base64')], 'VAULT_UNSUPPORTED_ALGORITHM', 7);

    // encrypt/decrypt are their own permissions, as Key Vault's, and are audited with the key version.
    const token = ok(['principal', 'add', '-n', 'wrapper']).trim();
    ok(['policy', 'set', '--principal', 'wrapper', '--key-permissions', 'wrapKey']);
    const asWrapper = { env: { VHDCRYPT_VAULT_TOKEN: token } };
    refused(['key', 'encrypt', '-n', 'imp', '-a', 'RSA-OAEP', '--value', dek.toString('base64')], 'VAULT_FORBIDDEN', 5, asWrapper);
    ok(['policy', 'set', '--principal', 'wrapper', '--key-permissions', 'encrypt']);
    const e = JSON.parse(ok(['key', 'encrypt', '-n', 'imp', '-a', 'RSA-OAEP', '--value', dek.toString('base64'), '-o', 'json'], asWrapper)) as { kid: string; result: string };
    refused(['key', 'decrypt', '-n', 'imp', '-a', 'RSA-OAEP', '--value', e.result], 'VAULT_FORBIDDEN', 5, asWrapper);
    const audit = json<Array<{ principal: string; operation: string; objectId: string; result: string }>>(['audit']);
    expect(audit.filter((x) => x.principal === 'wrapper' && x.operation !== 'authenticate').map((x) => `${x.operation}:${x.result}`)).toEqual([
      'encrypt:VAULT_FORBIDDEN', 'encrypt:ok', 'decrypt:VAULT_FORBIDDEN',
    ]);
    expect(audit.find((x) => x.principal === 'wrapper' && x.operation === 'encrypt' && x.result === 'ok')!.objectId).toBe(e.kid);
    expect(JSON.stringify(audit)).not.toContain(dek.toString('base64'));
  });

  test('key -n/--id on every verb; list-versions, list-deleted, show-deleted; --disabled/--enabled', () => {
    const first = json<KeyJson>(['key', 'create', '-n', 'life', '--disabled', 'false']);
    expect(first.properties.enabled).toBe(true);
    const second = json<KeyJson>(['key', 'rotate', '--id', `file:${dir}/keys/life`]);
    expect(json<Array<{ version: string }>>(['key', 'list-versions', '-n', 'life']).map((x) => x.version)).toEqual([first.properties.version, second.properties.version]);
    expect(json<unknown[]>(['key', 'list-versions', '--id', `file:${dir}/keys/life`])).toHaveLength(2);
    expect(json<KeyJson>(['key', 'show', '--id', first.properties.id]).properties.version).toBe(first.properties.version);
    expect(json<{ enabled: boolean }>(['key', 'set-attributes', '--id', first.properties.id, '--disabled']).enabled).toBe(false);
    refused(['key', 'wrap', '--id', first.properties.id, '-a', 'RSA-OAEP', '--value', 'AAAA'], 'VAULT_KEY_DISABLED', 5);
    expect(json<{ enabled: boolean }>(['key', 'set-attributes', '-n', 'life', '--version', first.properties.version, '--enabled', 'true']).enabled).toBe(true);
    expect(json<KeyJson>(['key', 'create', '-n', 'dis', '--enabled', 'false']).properties.enabled).toBe(false);
    refused(['key', 'create', '-n', 'x', '--enabled', 'true', '--disabled', 'true']);

    ok(['key', 'delete', '-n', 'life']);
    expect(json<Array<{ name: string }>>(['key', 'list-deleted']).map((x) => x.name)).toEqual(['life']);
    expect(json<{ name: string; properties: { version: string } }>(['key', 'show-deleted', '--id', `file:${dir}/keys/life`])).toMatchObject({
      name: 'life', properties: { version: second.properties.version },
    });
    refused(['key', 'show-deleted', '--id', second.properties.id]);
    refused(['key', 'show-deleted', '-n', 'shown'], 'VAULT_KEY_NOT_FOUND', 5);
    ok(['key', 'purge', '--id', `file:${dir}/keys/life`]);
    expect(json<unknown[]>(['key', 'list-deleted'])).toEqual([]);
  });
});
