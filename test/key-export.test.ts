/**
 * `vhdcrypt key export` and exportImageKey: the passphrase and volume key unsealed through the vault as decrypt
 * unseals them (audited, same permissions), written to new 0600 files with no trailing newline, never over an
 * existing file without --force, never to standard output unless '-' is given; new sealed passphrases are base64
 * text of 32 random bytes, and images whose sealed passphrase is raw bytes still open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decryptImage, encryptImage, exportImageKey, openVault, sealDiskKey } from '../src/index.js';
import { unsealDiskKey } from '../src/vault/index.js';
import { randomTextPassphrase } from '../src/volume/index.js';
import { PBKDF2_FAST, entries, firstDifference, makeRaw, removeDir, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.cjs');
let dir: string;
let vaultDir: string;
let src: string;
let model: Uint8Array;
let env: NodeJS.ProcessEnv;
/** A LUKS2 raw image and a plain VHD, both sealed in the embedded vault by the CLI. */
let luks2: string;
let plainVhd: string;

function cli(args: string[], extra: NodeJS.ProcessEnv = {}): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...env, ...extra }, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
}
function ok(args: string[], extra: NodeJS.ProcessEnv = {}): Buffer {
  const r = cli(args, extra);
  expect(r.status, `vhdcrypt ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(() => {
  dir = tempDir('key-export');
  vaultDir = join(dir, 'vault');
  env = { ...process.env, VHDCRYPT_VAULT: vaultDir };
  delete env.VHDCRYPT_VAULT_TOKEN;
  src = join(dir, 'src.raw');
  model = makeRaw(src, 4 << 20, [[0, 64 << 10], [3 << 20, 64 << 10]]);
  ok(['vault', 'init']);
  luks2 = join(dir, 'l2.raw');
  ok(['encrypt', src, luks2, '--format', 'luks2']);
  const vhd = join(dir, 'src.vhd');
  spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', src, vhd]);
  plainVhd = join(dir, 'plain.vhd');
  ok(['encrypt', vhd, plainVhd, '--format', 'plain', '--key-size', '256']);
});
afterAll(() => removeDir(dir));

describe('new vault-sealed passphrases', () => {
  it('are the base64 text of 32 random bytes, as sealed and as exported', async () => {
    const out = join(dir, 'b64.pass');
    const r = JSON.parse(ok(['key', 'export', luks2, '--passphrase-file', out, '--json']).toString('utf8')) as { secretId: string; passphraseBytes: number };
    const text = readFileSync(out, 'latin1');
    expect(text).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(text, 'base64')).toHaveLength(32);
    expect(r.passphraseBytes).toBe(44);
    const v = await openVault(`file:${vaultDir}`, { create: false });
    try {
      const sealed = await unsealDiskKey(v, r.secretId);
      expect(Buffer.from(sealed).toString('latin1')).toBe(text);
    } finally {
      await v.close();
    }
  });

  it('are encoded as node:crypto\'s Buffer base64 encodes the same bytes (the encoder checked against an oracle)', () => {
    for (let i = 0; i < 200; i++) {
      const p = randomTextPassphrase();
      const text = Buffer.from(p).toString('latin1');
      const bytes = Buffer.from(text, 'base64');
      expect(bytes).toHaveLength(32);
      expect(bytes.toString('base64')).toBe(text);
    }
  });

  it('images whose sealed passphrase is raw bytes (not UTF-8) still decrypt and export', async () => {
    const raw = randomBytes(32);
    raw[0] = 0xff;
    const old = join(dir, 'old.raw');
    await encryptImage(src, old, { format: 'luks1', passphrase: raw, kdf: PBKDF2_FAST });
    const uuid = spawnSync('cryptsetup', ['luksUUID', old], { encoding: 'utf8', env: { ...env, PATH: `/usr/sbin:/sbin:${env.PATH ?? ''}` } }).stdout.trim();
    expect(uuid).toMatch(/^[0-9a-f-]{36}$/);
    const v = await openVault(`file:${vaultDir}`, { create: false });
    try {
      await sealDiskKey(v, { diskId: `old-${uuid}`, material: raw, kek: 'vhdcrypt-kek', volumeUuid: uuid });
    } finally {
      await v.close();
    }
    const back = join(dir, 'old-back.raw');
    await decryptImage(old, back, { vault: `file:${vaultDir}` });
    expect(firstDifference(new Uint8Array(readFileSync(back)), model)).toBe(-1);
    const pass = join(dir, 'old.pass');
    await exportImageKey(old, { vault: `file:${vaultDir}`, passphraseFile: pass });
    expect(readFileSync(pass).equals(raw)).toBe(true);
  });
});

describe('key export writes', () => {
  it('files of mode 0600 with no trailing newline, whatever the umask; --json names them but not the key', () => {
    const pass = join(dir, 'm.pass');
    const key = join(dir, 'm.key');
    const out = spawnSync('sh', ['-c', `umask 277 && exec "$0" "$@"`, process.execPath, CLI, 'key', 'export', luks2, '--passphrase-file', pass, '--volume-key-file', key, '--json'], { env, encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    for (const f of [pass, key]) expect((statSync(f).mode & 0o777).toString(8)).toBe('600');
    const p = readFileSync(pass);
    expect(p).toHaveLength(44);
    expect(p.includes(0x0a)).toBe(false);
    const k = readFileSync(key);
    expect(k).toHaveLength(64);
    const j = JSON.parse(out.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ passphraseFile: pass, volumeKeyFile: key, volumeKeyBits: 512, format: 'luks2' });
    expect(out.stdout).not.toContain(p.toString('latin1'));
    expect(out.stdout).not.toContain(k.toString('hex'));
    expect(out.stdout).not.toContain(k.toString('base64'));
    // Nothing but the two files is left in the directory (no temp file).
    expect(entries(dir).filter((n) => n.includes('vhdcrypt-tmp'))).toEqual([]);
  });

  it('refuses an existing file (exit 6, left as it was) unless --force, which replaces it with a new 0600 file', () => {
    const pass = join(dir, 'exists.pass');
    writeFileSync(pass, 'keep me', { mode: 0o644 });
    const r = cli(['key', 'export', luks2, '--passphrase-file', pass]);
    expect(r.status).toBe(6);
    expect(r.stderr).toMatch(/ENGINE_DEST_EXISTS/);
    expect(readFileSync(pass, 'utf8')).toBe('keep me');
    ok(['key', 'export', luks2, '--passphrase-file', pass, '--force']);
    expect(readFileSync(pass)).toHaveLength(44);
    expect(statSync(pass).mode & 0o777).toBe(0o600);
  });

  it('refuses to overwrite the image itself, even with --force', () => {
    const r = cli(['key', 'export', luks2, '--volume-key-file', luks2, '--force']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ENGINE_SAME_FILE/);
  });

  it('never writes to standard output unless - is given', () => {
    const none = cli(['key', 'export', luks2]);
    expect(none.status).toBe(2);
    expect(none.stdout).toHaveLength(0);
    expect(none.stderr).toMatch(/ENGINE_BAD_ARGUMENT: nothing to export/);
    // /dev/stdout is a name like any other: it exists, so it is refused.
    const devStdout = cli(['key', 'export', luks2, '--passphrase-file', '/dev/stdout']);
    expect(devStdout.status).toBe(6);
    expect(devStdout.stdout).toHaveLength(0);
    const both = cli(['key', 'export', luks2, '--passphrase-file', '-', '--volume-key-file', '-']);
    expect(both.status).toBe(2);
    expect(both.stdout).toHaveLength(0);
    // On purpose: the bytes alone on stdout, the report on stderr.
    const given = cli(['key', 'export', luks2, '--passphrase-file', '-']);
    expect(given.status, given.stderr).toBe(0);
    expect(given.stdout.toString('latin1')).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(given.stderr).toMatch(/written to standard output/);
  });

  it('plain volumes: --volume-key-file gives the raw key; --passphrase-file is a usage error', () => {
    const key = join(dir, 'plain.key');
    const j = JSON.parse(ok(['key', 'export', plainVhd, '--volume-key-file', key, '--json']).toString('utf8')) as Record<string, unknown>;
    expect(j).toMatchObject({ format: 'plain', volumeKeyBits: 256, passphraseFile: null });
    expect(readFileSync(key)).toHaveLength(32);
    // The key decrypts the image with cryptsetup-style plain key files (--key-file is the raw key).
    const back = join(dir, 'plain-back.raw');
    ok(['decrypt', plainVhd, back, '--key-file', key, '--key-size', '256', '--out-format', 'raw']);
    expect(firstDifference(new Uint8Array(readFileSync(back)), model)).toBe(-1);
    const r = cli(['key', 'export', plainVhd, '--passphrase-file', join(dir, 'plain.pass')]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ENGINE_BAD_ARGUMENT: .*plain volume has no keyslot passphrase/);
    expect(existsSync(join(dir, 'plain.pass'))).toBe(false);
  });
});

describe('key export and the vault', () => {
  interface AuditEntry { principal: string; operation: string; result: string; objectId: string }
  const audit = (): AuditEntry[] => JSON.parse(ok(['vault', 'audit', '--json']).toString('utf8')) as AuditEntry[];

  it('the unseal shows in the audit log; a principal without permission is refused and nothing is written', () => {
    const before = audit().length;
    ok(['key', 'export', luks2, '--volume-key-file', join(dir, 'audited.key')]);
    const mine = audit().slice(before);
    expect(mine.map((e) => `${e.principal}:${e.operation}:${e.result}`)).toContain('owner:unwrapKey:ok');
    expect(JSON.stringify(mine)).not.toContain(readFileSync(join(dir, 'audited.key')).toString('hex'));

    const token = ok(['vault', 'principal', 'add', '--name', 'exporter']).toString('utf8').trim();
    const denied = cli(['key', 'export', luks2, '--passphrase-file', join(dir, 'denied.pass')], { VHDCRYPT_VAULT_TOKEN: token });
    expect(denied.status).toBe(5);
    expect(denied.stderr).toMatch(/VAULT_FORBIDDEN/);
    expect(existsSync(join(dir, 'denied.pass'))).toBe(false);
    // With what decrypt needs (read the secret, unwrap with the KEK) it works, and the log names the principal.
    ok(['vault', 'policy', 'set', '--principal', 'exporter', '--secret-permissions', 'get', '--key-permissions', 'unwrapKey']);
    const allowed = join(dir, 'allowed.pass');
    ok(['key', 'export', luks2, '--passphrase-file', allowed], { VHDCRYPT_VAULT_TOKEN: token });
    expect(readFileSync(allowed)).toHaveLength(44);
    const log = audit().filter((e) => e.principal === 'exporter').map((e) => `${e.operation}:${e.result}`);
    expect(log).toContain('unwrapKey:ok');
    expect(log.some((r) => r.endsWith('VAULT_FORBIDDEN'))).toBe(true);
  });
});
