/**
 * PKCS#11 end to end with real tools: the compiled CLI in child processes, a SoftHSM2 token made by
 * softhsm2-util in a temp dir, keys and certificates by pkcs11-tool and openssl, LUKS2 images checked and
 * enrolled by cryptsetup and Debian's systemd-cryptenroll, all on image files (no root, no device-mapper).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { createSoftHsm, haveSoftHsm, USER_PIN, type SoftHsm } from './helpers/softhsm.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';

const hsmOk = haveSoftHsm() && spawnSync('cryptsetup', ['--version']).status === 0;
const haveCryptenroll = spawnSync('systemd-cryptenroll', ['--help']).status === 0;
const PIN_MARK = 'PINMARK9';

let hsm: SoftHsm;
let dir: string;
let pinFile: string;
let badPinFile: string;
let src: string;
let srcHash: string;

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { env: { ...hsm.env, ...opts.env }, input: opts.input, encoding: 'utf8' });
}

/** The CLI with the module in the environment and the vault in the temp dir. */
function cli(args: string[], env: NodeJS.ProcessEnv = {}, node: string[] = []): SpawnSyncReturns<string> {
  const r = run(process.execPath, [...node, join(root, 'bin', 'vhdcrypt.cjs'), ...args], {
    env: { VHDCRYPT_VAULT: join(dir, 'vault'), VHDCRYPT_PKCS11_MODULE: hsm.module, VHDCRYPT_PKCS11_PIN: '', ...env },
  });
  // No command ever prints the PIN.
  expect(r.stdout + r.stderr).not.toContain(USER_PIN + PIN_MARK);
  expect(r.stdout + r.stderr).not.toMatch(new RegExp(`\\b${USER_PIN}\\b`));
  return r;
}

function ok(r: SpawnSyncReturns<string>): string {
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

function luksJson(img: string): { keyslots: Record<string, any>; tokens: Record<string, any> } {
  return JSON.parse(ok(run('cryptsetup', ['luksDump', '--dump-json-metadata', img])));
}

describe.skipIf(!hsmOk)('PKCS#11 through the CLI (SoftHSM2)', () => {
  beforeAll(() => {
    ensureDist(true);
    hsm = createSoftHsm();
    dir = hsm.dir;
    hsm.initToken('hsm');
    pinFile = join(dir, 'pin');
    writeFileSync(pinFile, `${USER_PIN}\n`, { mode: 0o600 });
    badPinFile = join(dir, 'badpin');
    writeFileSync(badPinFile, '9999\n', { mode: 0o600 });
    src = join(dir, 'src.raw');
    const data = Buffer.alloc(1 << 20);
    for (let i = 0; i < data.length; i += 4096) data.write(`sector ${i / 4096} of the source`, i);
    writeFileSync(src, data);
    srcHash = sha(src);
    ok(cli(['pkcs11', 'keygen', '--token', 'hsm', '--label', 'aes-kek', '--type', 'aes256', '--pin-file', pinFile]));
    ok(cli(['pkcs11', 'keygen', '--token', 'pkcs11:token=hsm', '--label', 'rsa-kek', '--type', 'rsa3072', '--pin-file', pinFile]));
    ok(cli(['pkcs11', 'keygen', '--token', 'hsm', '--label', 'master', '--type', 'aes256', '--pin-file', pinFile]));
    hsm.importRsaWithCert('hsm', 'luks', '07');
    ok(cli(['vault', 'init']));
  }, 120_000);
  afterAll(() => hsm?.cleanup());

  test('keygen refuses a second key of the same label (exit 6) and a PIN in the URI (exit 2)', () => {
    const again = cli(['pkcs11', 'keygen', '--token', 'hsm', '--label', 'aes-kek', '--type', 'aes256', '--pin-file', pinFile]);
    expect([again.status, again.stderr]).toEqual([6, expect.stringMatching(/^vhdcrypt: PKCS11_KEY_EXISTS: /)]);
    const inUri = cli(['encrypt', src, join(dir, 'x.raw'), '--kek', 'pkcs11:token=hsm;object=aes-kek?pin-value=1234']);
    expect([inUri.status, inUri.stderr]).toEqual([2, expect.stringMatching(/PKCS11_BAD_PIN_SOURCE/)]);
  });

  test.each([['aes-kek', 'CKM_AES_KEY_WRAP_PAD'], ['rsa-kek', 'CKM_RSA_PKCS_OAEP-SHA1']])('encrypt --kek pkcs11:...%s seals in the token (%s); decrypt opens it', (label, mech) => {
    const enc = join(dir, `${label}.raw`);
    const out = JSON.parse(ok(cli(['encrypt', src, enc, '--kek', `pkcs11:token=hsm;object=${label}`, '--pin-file', pinFile, '--json'])));
    expect(out.kekId).toBe(`pkcs11:token=hsm;object=${label}`);
    const tags = JSON.parse(ok(cli(['vault', 'secret', 'list', '--json']))).find((s: { id: string }) => s.id === out.secretId).tags;
    expect(tags).toMatchObject({ DiskEncryptionKeyEncryptionAlgorithm: mech, DiskEncryptionKeyEncryptionKeyURL: `pkcs11:token=hsm;object=${label}` });
    const dec = join(dir, `${label}.dec`);
    ok(cli(['decrypt', enc, dec], { VHDCRYPT_PKCS11_PIN: USER_PIN }));
    expect(sha(dec)).toBe(srcHash);
    // Each refusal its typed error and exit status (once: the path is the same for both kinds of key).
    if (label !== 'aes-kek') return;
    const cases: Array<[string[], NodeJS.ProcessEnv, number, string]> = [
      [['--pin-file', badPinFile], {}, 4, 'PKCS11_PIN_INCORRECT'],
      [[], {}, 4, 'PKCS11_PIN_REQUIRED'],
      [['--pin-file', pinFile, '--pkcs11-module', join(dir, 'no-such-module.so')], {}, 3, 'PKCS11_MODULE_LOAD_FAILED'],
      [['--pin-file', pinFile], { VHDCRYPT_PKCS11_MODULE: '' }, 2, 'PKCS11_NO_MODULE'],
    ];
    for (const [flags, env, status, code] of cases) {
      const r = cli(['decrypt', enc, join(dir, 'never.raw'), ...flags], env);
      expect([r.status, r.stderr.split('\n')[0]], code).toEqual([status, expect.stringMatching(new RegExp(`^vhdcrypt: ${code}: `))]);
      expect(existsSync(join(dir, 'never.raw'))).toBe(false);
    }
  });

  test('a missing token and a locked token are refused with their codes (exit 5)', () => {
    const missing = cli(['encrypt', src, join(dir, 'm.raw'), '--kek', 'pkcs11:token=absent;object=aes-kek', '--pin-file', pinFile]);
    expect([missing.status, missing.stderr]).toEqual([5, expect.stringMatching(/^vhdcrypt: PKCS11_TOKEN_NOT_FOUND: no token matches .*tokens present: "hsm"/)]);
    // SoftHSM 2.6 counts wrong PINs but never locks; a second token's store gets CKF_USER_PIN_LOCKED (0x40000) set in
    // its token flags (big-endian u64), which SoftHSM then reports as a real locked token would.
    hsm.initToken('locked');
    const tokenDirs = readdirSync(join(dir, 'tokens')).map((d) => join(dir, 'tokens', d, 'token.object'));
    const file = tokenDirs.find((f) => readFileSync(f).includes(Buffer.from('locked')))!;
    const b = readFileSync(file);
    const at = b.indexOf(Buffer.from('000000000000042d', 'hex'));
    expect(at).toBeGreaterThan(0);
    b.writeBigUInt64BE(0x42dn | 0x40000n, at);
    writeFileSync(file, b);
    expect(run('pkcs11-tool', ['--module', hsm.module, '-L']).stdout).toMatch(/user PIN locked/);
    const locked = cli(['encrypt', src, join(dir, 'l.raw'), '--kek', 'pkcs11:token=locked;object=k', '--pin-file', pinFile]);
    expect([locked.status, locked.stderr]).toEqual([5, expect.stringMatching(/^vhdcrypt: PKCS11_PIN_LOCKED: /)]);
  });

  test('without pkcs11js, a PKCS#11 request is PKCS11_UNAVAILABLE (exit 7) and everything else runs', () => {
    const hook = ['--import', join(root, 'test', 'fixtures', 'no-pkcs11js.mjs')];
    const r = cli(['encrypt', src, join(dir, 'u.raw'), '--kek', 'pkcs11:token=hsm;object=aes-kek', '--pin-file', pinFile], {}, hook);
    expect([r.status, r.stderr]).toEqual([7, expect.stringMatching(/^vhdcrypt: PKCS11_UNAVAILABLE: .*pkcs11js did not load \(Cannot find (package|module) 'pkcs11js'\)/)]);
    const plain = join(dir, 'u2.raw');
    ok(cli(['encrypt', src, plain], {}, hook));
    ok(cli(['decrypt', plain, join(dir, 'u2.dec')], {}, hook));
    expect(sha(join(dir, 'u2.dec'))).toBe(srcHash);
  });

  test('rotate-kek --to moves disks from a vault KEK into the token; the old versions are disabled', () => {
    const enc = join(dir, 'rot.raw');
    ok(cli(['encrypt', src, enc, '--kek', 'rot-kek']));
    const r = JSON.parse(ok(cli(['vault', 'rotate-kek', 'rot-kek', '--to', 'pkcs11:token=hsm;object=rsa-kek', '--pin-file', pinFile, '--json'])));
    expect(r.rewrapped).toHaveLength(1);
    expect(r.disabled).toHaveLength(1);
    const noPin = cli(['decrypt', enc, join(dir, 'rot.never')]);
    expect([noPin.status, noPin.stderr]).toEqual([4, expect.stringMatching(/PKCS11_PIN_REQUIRED/)]);
    ok(cli(['decrypt', enc, join(dir, 'rot.dec'), '--pin-file', pinFile]));
    expect(sha(join(dir, 'rot.dec'))).toBe(srcHash);
  });

  test('a vault whose master key is wrapped in the token opens only with the token', () => {
    const env = { VHDCRYPT_VAULT: join(dir, 'hsm-vault') };
    ok(cli(['vault', 'init', '--master-key', 'pkcs11:token=hsm;object=master', '--pin-file', pinFile], env));
    expect(existsSync(join(dir, 'hsm-vault', 'master.key'))).toBe(false);
    ok(cli(['vault', 'secret', 'set', '--name', 'a', '--value', 'b', '--pin-file', pinFile], env));
    expect(ok(cli(['vault', 'secret', 'show', '--name', 'a'], { ...env, VHDCRYPT_PKCS11_PIN: USER_PIN }))).toBe('b\n');
    const noPin = cli(['vault', 'show'], env);
    expect([noPin.status, noPin.stderr]).toEqual([4, expect.stringMatching(/^vhdcrypt: PKCS11_PIN_REQUIRED: /)]);
    const badPin = cli(['vault', 'show', '--pin-file', badPinFile], env);
    expect([badPin.status, badPin.stderr]).toEqual([4, expect.stringMatching(/^vhdcrypt: PKCS11_PIN_INCORRECT: /)]);
    // The same vault with the token key gone (a different token of the same name would be the same): unopenable.
    hsm.tool('hsm', ['--delete-object', '--type', 'secrkey', '--label', 'master']);
    const gone = cli(['vault', 'show', '--pin-file', pinFile], env);
    expect([gone.status, gone.stderr]).toEqual([5, expect.stringMatching(/^vhdcrypt: PKCS11_KEY_NOT_FOUND: /)]);
  });

  test.skipIf(!haveCryptenroll)('a volume systemd-cryptenroll enrolled opens with vhdcrypt through its systemd-pkcs11 token', () => {
    const enc = join(dir, 'sd.raw');
    ok(cli(['encrypt', src, enc]));
    const pass = join(dir, 'sd.pass');
    ok(cli(['key', 'export', enc, '--passphrase-file', pass]));
    const e = run('systemd-cryptenroll', ['--pkcs11-token-uri=pkcs11:token=hsm;object=luks', enc], { env: { PASSWORD: readFileSync(pass, 'utf8'), PIN: USER_PIN } });
    expect(e.status, e.stderr).toBe(0);
    const meta = luksJson(enc);
    const sdToken = Object.values(meta.tokens).find((t) => t.type === 'systemd-pkcs11');
    expect(Object.keys(sdToken)).toEqual(['type', 'keyslots', 'pkcs11-uri', 'pkcs11-key']);
    const info = ok(cli(['info', enc]));
    expect(info).toMatch(/token \d: systemd-pkcs11, keyslots 1; pkcs11:token=hsm;object=luks/);
    // With the vault token there too, the PKCS#11 token is used when asked.
    ok(cli(['decrypt', enc, join(dir, 'sd.dec1'), '--use-pkcs11-token', '--pin-file', pinFile], { VHDCRYPT_VAULT: join(dir, 'no-vault') }));
    expect(sha(join(dir, 'sd.dec1'))).toBe(srcHash);
    // Without it (cryptsetup removes our token), the systemd token alone opens it; no vault is involved.
    const vaultTokenId = Object.entries(meta.tokens).find(([, t]) => t.type === 'vhdcrypt-vault')![0];
    ok(run('cryptsetup', ['token', 'remove', '--token-id', vaultTokenId, enc]));
    ok(cli(['decrypt', enc, join(dir, 'sd.dec2')], { VHDCRYPT_VAULT: join(dir, 'no-vault'), VHDCRYPT_PKCS11_PIN: USER_PIN }));
    expect(sha(join(dir, 'sd.dec2'))).toBe(srcHash);
    const wrong = cli(['decrypt', enc, join(dir, 'sd.never'), '--pin-file', badPinFile], { VHDCRYPT_VAULT: join(dir, 'no-vault') });
    expect([wrong.status, wrong.stderr]).toEqual([4, expect.stringMatching(/PKCS11_PIN_INCORRECT/)]);
  });

  test('a volume vhdcrypt enrolled with only the certificate opens with cryptsetup: the secret pkcs11-tool recovers, and the systemd token plugin', () => {
    const enc = join(dir, 'vc.raw');
    const cert = join(dir, 'luks.cert.pem');
    // No module at all: with --pkcs11-cert the token is not touched at encryption time.
    ok(cli(['encrypt', src, enc, '--enroll-pkcs11', 'pkcs11:token=hsm;object=luks', '--pkcs11-cert', cert], { VHDCRYPT_PKCS11_MODULE: '' }));
    const meta = luksJson(enc);
    const [id, token] = Object.entries(meta.tokens).find(([, t]) => t.type === 'systemd-pkcs11')!;
    expect(Object.keys(token)).toEqual(['type', 'keyslots', 'pkcs11-uri', 'pkcs11-key']);
    expect(token['pkcs11-uri']).toBe('pkcs11:token=hsm;object=luks');
    const slot = token.keyslots[0] as string;
    // The keyslot as systemd-cryptenroll makes it: PBKDF2-SHA512, 1000 iterations, the AF hash following.
    expect(meta.keyslots[slot]).toMatchObject({ kdf: { type: 'pbkdf2', hash: 'sha512', iterations: 1000 }, af: { type: 'luks1', stripes: 4000, hash: 'sha512' } });
    const wrapped = Buffer.from(token['pkcs11-key'], 'base64');
    expect(wrapped.length).toBe(256);
    writeFileSync(join(dir, 'vc.key'), wrapped);
    // (pkcs11-tool 0.23 picks SoftHSM's key for decryption by --id; by --label it tries C_DecryptUpdate, which SoftHSM lacks.)
    hsm.tool('hsm', ['--decrypt', '-m', 'RSA-PKCS', '--id', '07', '--input-file', join(dir, 'vc.key'), '--output-file', join(dir, 'vc.secret')]);
    const secret = readFileSync(join(dir, 'vc.secret'));
    expect(secret.length).toBe(128);
    const t = run('cryptsetup', ['open', '--test-passphrase', '--key-slot', slot, '--key-file', '-', enc], { input: secret.toString('base64') });
    expect(t.status, t.stderr).toBe(0);
    const luksDump = ok(run('cryptsetup', ['luksDump', enc]));
    expect(luksDump).toMatch(new RegExp(`\\n\\s+${id}: systemd-pkcs11\\n\\s+pkcs11-uri: pkcs11:token=hsm;object=luks\\n\\s+pkcs11-key: `));
    // cryptsetup's systemd-pkcs11 token plugin (Debian's systemd ships it) reads the PIN from stdin.
    const plugin = '/usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-pkcs11.so';
    if (existsSync(plugin)) {
      const p = run('cryptsetup', ['open', '--test-passphrase', '--token-only', '--token-id', id, enc], { input: `${USER_PIN}\n` });
      expect(p.status, p.stderr).toBe(0);
      const bad = run('cryptsetup', ['open', '--test-passphrase', '--token-only', '--token-id', id, enc], { input: '9999\n' });
      expect(bad.status).not.toBe(0);
    }
    // vhdcrypt itself, through the token (the vault token is there too, so asked for).
    ok(cli(['decrypt', enc, join(dir, 'vc.dec'), '--use-pkcs11-token', '--pin-file', pinFile]));
    expect(sha(join(dir, 'vc.dec'))).toBe(srcHash);
  });

  test('keyslot add-pkcs11 enrols an existing image from the token itself; key export and serve open through it', async () => {
    const enc = join(dir, 'ka.raw');
    ok(cli(['encrypt', src, enc]));
    const out = JSON.parse(ok(cli(['keyslot', 'add-pkcs11', enc, 'pkcs11:token=hsm;object=luks', '--json'])));
    expect(out).toMatchObject({ keyslot: 1, token: 1 });
    const meta = luksJson(enc);
    expect(meta.tokens['1']).toMatchObject({ type: 'systemd-pkcs11', keyslots: ['1'], 'pkcs11-uri': 'pkcs11:token=hsm;object=luks' });
    const vk1 = join(dir, 'ka.vk1');
    const vk2 = join(dir, 'ka.vk2');
    ok(cli(['key', 'export', enc, '--volume-key-file', vk1]));
    ok(cli(['key', 'export', enc, '--volume-key-file', vk2, '--use-pkcs11-token', '--pin-file', pinFile], { VHDCRYPT_VAULT: join(dir, 'no-vault') }));
    expect(readFileSync(vk2).equals(readFileSync(vk1))).toBe(true);
    // serve: the PKCS#11 token unlocks, nbdcopy reads the plaintext back.
    const srv = await startServe([enc, '--socket', join(dir, 'ka.sock'), '--use-pkcs11-token', '--pin-file', pinFile], 60_000,
      { ...TOOL_ENV, ...hsm.env, VHDCRYPT_VAULT: join(dir, 'no-vault'), VHDCRYPT_PKCS11_MODULE: hsm.module });
    try {
      ok(run('nbdcopy', [srv.uri, join(dir, 'ka.served')], { env: TOOL_ENV }));
    } finally {
      await srv.stop();
    }
    expect(srv.stderr()).not.toContain(USER_PIN);
    expect(sha(join(dir, 'ka.served'))).toBe(srcHash);
  });
});
