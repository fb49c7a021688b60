/**
 * `vhdcrypt vault serve` and `vault principal add` as commands: the printed line and JSON, the generated CA and
 * server certificate (ECDSA P-256, SANs, 0600 keys, reused on restart), given certificate files, typed errors and
 * their exit statuses, SIGINT/SIGTERM ending with status 0.
 */
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { chmodSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, tempDir } from './fixtures/vault/temp-vault.js';
import { startVaultServer } from './helpers/vault-server.js';

afterAll(cleanupTempDirs);

let dir: string;
beforeAll(async () => {
  ensureDist(true);
  dir = join(tempDir(), 'vault');
  await (await openVault(`file:${dir}`, { create: true, exclusive: true, passphrase: '' })).close();
});

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.VHDCRYPT_VAULT_TOKEN;
  delete env.VHDCRYPT_VAULT_PASSPHRASE;
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', ...args, '--vault', `file:${dir}`], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('vault principal add', () => {
  test('--json prints tenantId, clientId and clientSecret once; plain output is the secret alone (also the token)', () => {
    const j = cli(['principal', 'add', '--name', 'svc', '--json']);
    expect(j.status, j.stderr).toBe(0);
    const creds = JSON.parse(j.stdout) as Record<string, string>;
    expect(Object.keys(creds).sort()).toEqual(['clientId', 'clientSecret', 'tenantId']);
    expect(creds.clientId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(creds.tenantId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(creds.clientSecret).toMatch(/^svc\.[A-Za-z0-9_-]{43}$/);
    // The secret is stored only as a hash.
    expect(readFileSync(join(dir, 'vault.sqlite')).includes(Buffer.from(creds.clientSecret!.split('.')[1]!))).toBe(false);
    const plain = cli(['principal', 'add', '--name', 'svc2']);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/^svc2\.[A-Za-z0-9_-]{43}\n$/);
    expect(plain.stderr).toMatch(/clientId [0-9a-f-]{36}/);
  });
});

describe('vault serve', () => {
  test('generated CA and server certificate: ECDSA P-256, SANs, keys 0600, reused on restart; SIGINT exits 0', async () => {
    const s = await startVaultServer({ vaultDir: dir });
    const fingerprint = new X509Certificate(s.caPem).fingerprint256;
    const stopped = await s.stop('SIGINT');
    expect(stopped.code).toBe(0);
    const server = new X509Certificate(readFileSync(join(dir, 'server', 'server.pem')));
    const ca = new X509Certificate(readFileSync(join(dir, 'server', 'ca.pem')));
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.publicKey.asymmetricKeyDetails).toMatchObject({ namedCurve: 'prime256v1' });
    expect(server.subjectAltName).toMatch(/DNS:localhost/);
    expect(server.subjectAltName).toMatch(/IP Address:127\.0\.0\.1/);
    expect(ca.ca).toBe(true);
    for (const f of ['ca.key', 'server.key', 'token-signing.key']) expect(statSync(join(dir, 'server', f)).mode & 0o777, f).toBe(0o600);
    const again = await startVaultServer({ vaultDir: dir });
    try {
      expect(new X509Certificate(again.caPem).fingerprint256).toBe(fingerprint);
    } finally {
      expect((await again.stop()).code).toBe(0);
    }
  }, 90_000);

  test('the plain line: URL, tenant, CA path and its SHA-256 fingerprint', async () => {
    const child = spawn(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'serve', '--vault', `file:${dir}`, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('\n')) resolve(out);
      });
      child.once('exit', (c) => reject(new Error(`exited ${c}`)));
    });
    const exit = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    const fp = new X509Certificate(readFileSync(join(dir, 'server', 'ca.pem'))).fingerprint256;
    expect(line).toMatch(new RegExp(`^https://127\\.0\\.0\\.1:\\d+ tenant [0-9a-f-]{36} ca ${join(dir, 'server', 'ca.pem').replace(/[.]/g, '\\.')} sha256 ${fp}\\n$`));
  }, 60_000);

  test('SIGTERM while the server is still starting ends it with status 0, not death by signal', async () => {
    const child = spawn(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'serve', '--vault', `file:${dir}`, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    // The CLI is running its own code once it has loaded: wait for its first system call on the vault, the lock file SQLite opens.
    await new Promise<void>((resolve) => {
      const poll = (): void => {
        let fds: string[] = [];
        try {
          fds = readdirSync(`/proc/${child.pid}/fd`).map((f) => { try { return readlinkSync(`/proc/${child.pid}/fd/${f}`); } catch { return ''; } });
        } catch {
          // Not there yet.
        }
        if (fds.some((f) => f.startsWith(dir))) resolve();
        else setTimeout(poll, 5);
      };
      poll();
    });
    child.kill('SIGTERM');
    expect(await exit).toEqual({ code: 0, signal: null });
  }, 60_000);

  test('usage errors exit 2; a key file others can read exits 3 (VAULT_SERVER_TLS); a port in use exits 1 (VAULT_SERVER_LISTEN)', async () => {
    for (const args of [['--listen', 'nowhere'], ['--listen', '127.0.0.1:70000'], ['--tls-cert', 'x.pem'], ['--tenant', 'bad tenant!']]) {
      const r = cli(['serve', ...args]);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/VAULT_BAD_ARGUMENT/);
    }
    const certDir = tempDir();
    const key = join(certDir, 'server.key');
    writeFileSync(key, generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
    chmodSync(key, 0o644);
    const exposed = cli(['serve', '--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'server', 'server.pem'), '--tls-key', key]);
    expect(exposed.status, exposed.stderr).toBe(3);
    expect(exposed.stderr).toMatch(/VAULT_SERVER_TLS/);
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as { port: number }).port;
      const r = cli(['serve', '--listen', `127.0.0.1:${port}`]);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/VAULT_SERVER_LISTEN/);
    } finally {
      busy.close();
    }
  }, 60_000);

  test('--tls-cert and --tls-key serve the given certificate', async () => {
    const s = await startVaultServer({ vaultDir: dir, args: ['--tls-cert', join(dir, 'server', 'server.pem'), '--tls-key', join(dir, 'server', 'server.key')] });
    try {
      expect(s.caPath).toBe(join(dir, 'server', 'server.pem'));
    } finally {
      expect((await s.stop()).code).toBe(0);
    }
  }, 60_000);
});
