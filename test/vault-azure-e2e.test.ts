/**
 * The https: provider end to end through the CLI against `vhdcrypt vault serve`: a least-privilege principal
 * (secrets get/set, keys get/wrapKey/unwrapKey) encrypts, inspects, decrypts and serves an image with
 * --vault https://127.0.0.1:PORT and its credentials in the environment (DefaultAzureCredential's
 * AZURE_* variables, the server's CA through VHDCRYPT_VAULT_CA only); a principal without unwrapKey is refused
 * in one line (exit 5); a vault that goes away mid-job is a typed error (exit 5) leaving no destination file;
 * an Azure Disk Encryption-shaped disk (LUKS, passphrase in a 'Wrapped BEK' secret) decrypts with --secret.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startVaultServer, type StartedVaultServer } from './helpers/vault-server.js';
import { startServe } from './helpers/nbd-serve-cli.js';
import { qemuEncryptLuks1 } from './helpers/qemu-luks.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, tempDir } from './fixtures/vault/temp-vault.js';

const JOB = { secrets: ['get', 'set'], keys: ['get', 'wrapKey', 'unwrapKey'] } as const;
const MiB = 1024 * 1024;

let server: StartedVaultServer;
let dir: string;
let src: string;

/** The environment of a CLI run as principal `p` (DefaultAzureCredential's variables; the CA via VHDCRYPT_VAULT_CA only). */
function envFor(p: { clientId: string; clientSecret: string }, authority = server.url): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...TOOL_ENV };
  for (const k of ['NODE_EXTRA_CA_CERTS', 'VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', 'AZURE_CLIENT_CERTIFICATE_PATH', 'AZURE_USERNAME']) delete env[k];
  return {
    ...env,
    VHDCRYPT_VAULT_CA: server.caPath,
    AZURE_TENANT_ID: server.tenantId,
    AZURE_CLIENT_ID: p.clientId,
    AZURE_CLIENT_SECRET: p.clientSecret,
    AZURE_AUTHORITY_HOST: authority,
  };
}

function cli(env: NodeJS.ProcessEnv, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), ...args], { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  ensureDist(true);
  server = await startVaultServer();
  dir = tempDir('vhdcrypt-azure-e2e-');
  src = join(dir, 'src.raw');
  writeFileSync(src, randomBytes(4 * MiB));
  // The KEK exists before the job runs: a disk job's principal does not create keys.
  const admin = await server.addPrincipal('admin', { secrets: ['get', 'list', 'set', 'delete'], keys: ['get', 'list', 'create', 'update', 'wrapKey', 'unwrapKey'] });
  const made = cli(envFor(admin), 'vault', 'key', 'create', '--vault', server.url, '-n', 'vhdcrypt-kek', '--kty', 'RSA', '--size', '3072');
  expect(made.status, made.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  cleanupTempDirs();
});

describe('a least-privilege principal over https', () => {
  test('encrypt -> info -> decrypt -> serve with --vault https://127.0.0.1:PORT', async () => {
    const job = await server.addPrincipal('disk-job', JOB);
    const env = envFor(job);
    const enc = join(dir, 'enc.img');
    const e = cli(env, 'encrypt', src, enc, '--vault', server.url, '--json');
    expect(e.status, e.stderr).toBe(0);
    const summary = JSON.parse(e.stdout) as { secretId: string; kekId: string; vaultUri: string };
    expect(summary.secretId.startsWith(`${server.url}/secrets/`)).toBe(true);
    expect(summary.kekId.startsWith(`${server.url}/keys/vhdcrypt-kek/`)).toBe(true);

    const info = cli(env, 'info', enc, '--vault', server.url, '--json');
    expect(info.status, info.stderr).toBe(0);
    expect(info.stdout).toContain(summary.secretId.split('/').slice(0, -1).join('/'));

    const out = join(dir, 'dec.raw');
    const d = cli(env, 'decrypt', enc, out, '--vault', server.url);
    expect(d.status, d.stderr).toBe(0);
    expect(readFileSync(out).equals(readFileSync(src))).toBe(true);

    const sock = join(dir, 'serve.sock');
    const served = await startServe([enc, '--vault', server.url, '--read-only', '--socket', sock], 60_000, env);
    try {
      const copy = join(dir, 'served.raw');
      const r = spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, copy], { env: TOOL_ENV, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(copy).subarray(0, 4 * MiB).equals(readFileSync(src))).toBe(true);
    } finally {
      await served.stop();
    }
  }, 180_000);

  test('encrypt --ade seals in ADE\'s shape; a principal without keys/unwrapKey: decrypt exits 5 with one line naming the refusal', async () => {
    const job = await server.addPrincipal('sealer', JOB);
    const enc = join(dir, 'enc2.img');
    // Sealed in Azure Disk Encryption's shape this time (encrypt --ade --kek-alg RSA-OAEP).
    const e = cli(envFor(job), 'encrypt', src, enc, '--vault', server.url, '--ade', 'vm1', '--kek-alg', 'RSA-OAEP', '--format', 'luks1', '--json');
    expect(e.status, e.stderr).toBe(0);
    const { secretId, kekId } = JSON.parse(e.stdout) as { secretId: string; kekId: string };
    const shown = cli(envFor(job), 'vault', 'secret', 'show', '--vault', server.url, '--id', secretId, '-o', 'json');
    expect(shown.status, shown.stderr).toBe(0);
    const secret = JSON.parse(shown.stdout) as { contentType: string; tags: Record<string, string>; value: string };
    expect(secret.contentType).toBe('Wrapped BEK');
    expect(secret.tags).toMatchObject({
      DiskEncryptionKeyEncryptionAlgorithm: 'RSA-OAEP', DiskEncryptionKeyEncryptionKeyURL: kekId, DiskEncryptionKeyFileName: 'LinuxPassPhraseFileName', MachineName: 'vm1',
    });
    expect(Buffer.from(secret.value, 'base64url')).toHaveLength(384);
    const noUnwrap = await server.addPrincipal('no-unwrap', { secrets: ['get'], keys: ['get'] });
    const out = join(dir, 'dec2.raw');
    const d = cli(envFor(noUnwrap), 'decrypt', enc, out, '--vault', server.url);
    expect(d.status, d.stderr).toBe(5);
    const lines = d.stderr.trim().split('\n');
    expect(lines, d.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/VAULT_FORBIDDEN/);
    expect(existsSync(out)).toBe(false);
  }, 120_000);
});

describe('leaving Azure Disk Encryption', () => {
  test("a LUKS disk whose passphrase sits in an ADE 'Wrapped BEK' secret (made as ADE's scripts make it) decrypts with --secret <secret URL>", async () => {
    const admin = await server.addPrincipal('ade-admin', { secrets: ['get', 'set'], keys: ['get', 'create', 'encrypt'] });
    const env = envFor(admin);
    const passphrase = randomBytes(24).toString('base64url');
    const plain = join(dir, 'ade-plain.raw');
    writeFileSync(plain, randomBytes(2 * MiB));
    const disk = join(dir, 'ade-disk.img');
    qemuEncryptLuks1(plain, disk, passphrase);
    // ADE's KEK flow: POST {kek}/encrypt with alg RSA-OAEP over the passphrase; the secret is the result.
    expect(cli(env, 'vault', 'key', 'create', '--vault', server.url, '-n', 'ade-kek', '--kty', 'RSA', '--size', '2048').status).toBe(0);
    const enc = cli(env, 'vault', 'key', 'encrypt', '--vault', server.url, '-n', 'ade-kek', '--algorithm', 'RSA-OAEP', '--value', Buffer.from(passphrase).toString('base64'), '-o', 'json');
    expect(enc.status, enc.stderr).toBe(0);
    const { kid, result } = JSON.parse(enc.stdout) as { kid: string; result: string };
    const set = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'secret', 'set', '--vault', server.url, '-n', 'ade-os-disk', '--value', '-',
      '--content-type', 'Wrapped BEK', '--tags', 'DiskEncryptionKeyEncryptionAlgorithm=RSA-OAEP', `DiskEncryptionKeyEncryptionKeyURL=${kid}`,
      'DiskEncryptionKeyFileName=LinuxPassPhraseFileName', 'MachineName=legacy-vm'], { env, encoding: 'utf8', input: Buffer.from(result, 'base64').toString('base64url') });
    expect(set.status, set.stderr).toBe(0);
    const secretUrl = set.stdout.trim();
    expect(secretUrl.startsWith(`${server.url}/secrets/ade-os-disk/`)).toBe(true);

    // The migration runs as a principal that can only read the secret and unwrap with the KEK.
    const mover = await server.addPrincipal('ade-mover', { secrets: ['get'], keys: ['get', 'unwrapKey'] });
    const out = join(dir, 'ade-out.raw');
    const d = cli(envFor(mover), 'decrypt', disk, out, '--vault', server.url, '--secret', secretUrl);
    expect(d.status, d.stderr).toBe(0);
    expect(readFileSync(out).subarray(0, 2 * MiB).equals(readFileSync(plain))).toBe(true);
  }, 180_000);
});
