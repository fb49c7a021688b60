/**
 * The https: provider when things go wrong across the network: `vault rotate-kek` over 20 sealed disks killed
 * (SIGKILL) at random points and rerun until it finishes, after which every disk opens; a vault server stopped
 * mid-job, which makes the job fail with a typed error (exit 5) and leave no file under the destination name;
 * a vault nobody listens on, which fails a command within the bounded retries and says so; a server whose
 * certificate is not of the CA given (or of none), which is refused.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, watch, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TAG_ROTATION, sealDiskKey, unsealDiskKey, type Vault } from '../src/vault/index.js';
import { startVaultServer, type StartedVaultServer } from './helpers/vault-server.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { ALL, httpsProvider, type ProviderUnderTest } from './fixtures/vault/providers.js';
import { cleanupTempDirs, tempDir } from './fixtures/vault/temp-vault.js';

afterAll(cleanupTempDirs);

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...TOOL_ENV };
  for (const k of ['NODE_EXTRA_CA_CERTS', 'VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN']) delete env[k];
  return { ...env, ...extra };
}

describe('vault rotate-kek across the network, killed at random points', () => {
  let p: ProviderUnderTest;
  let v: Vault;
  beforeAll(async () => {
    p = await httpsProvider();
    v = await p.admin();
  }, 120_000);
  afterAll(async () => {
    await v?.close();
    await p?.stop();
  });

  test('20 disks: SIGKILLed after a random number of rewraps three times, rerun by the CLI; every disk opens by its old id', async () => {
    const mod = ensureDist(true);
    const kek = 'kek';
    const disks: Array<{ material: Buffer; secretId: string }> = [];
    for (let i = 0; i < 20; i++) {
      const material = randomBytes(32);
      disks.push({ material, ...(await sealDiskKey(v, { diskId: `disk-${i}`, material, kek, ...(i % 5 === 0 ? { alg: 'RSA-OAEP' as const, ade: { machineName: `vm${i}` } } : {}) })) });
    }
    const env = childEnv(p.childEnv);
    const runChild = (killAfter: number) => new Promise<{ code: number | null; signal: NodeJS.Signals | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, [join(root, 'test', 'fixtures', 'vault', 'rotate-child.mjs'), mod, p.uri, kek, String(killAfter)], { env });
      let err = '';
      child.stderr.on('data', (c) => (err += c));
      child.stdout.resume();
      child.on('close', (code, signal) => resolve({ code, signal, err }));
    });
    const points: number[] = [];
    for (let round = 0; round < 3; round++) {
      const n = randomInt(1, 20);
      points.push(n);
      const r = await runChild(n);
      // A run with fewer than n rewraps left finishes: then the next one starts (and may finish) another rotation.
      expect(r.signal === 'SIGKILL' || r.code === 0, `kill points ${points.join(',')}: ${r.err}`).toBe(true);
      for (const d of disks) expect(Buffer.from(await unsealDiskKey(v, d.secretId)).equals(d.material), `kill points ${points.join(',')}`).toBe(true);
    }
    const rerun = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'rotate-kek', kek, '--vault', p.uri, '--json'], { env, encoding: 'utf8', timeout: 120_000 });
    expect(rerun.status, rerun.stderr).toBe(0);
    const result = JSON.parse(rerun.stdout) as { kekId: string };
    const versions = await v.listKeyVersions(kek);
    expect(versions.at(-1)!.id).toBe(result.kekId);
    expect(versions.at(-1)!.tags[TAG_ROTATION]).toBeUndefined();
    expect(versions.slice(0, -1).every((x) => !x.enabled)).toBe(true);
    // Every disk opens, by its old id, for a principal holding only secrets/get and keys/get+unwrapKey.
    const reader = await p.principal({ secrets: ['get'], keys: ['get', 'unwrapKey'] });
    try {
      for (const d of disks) expect(Buffer.from(await unsealDiskKey(reader, d.secretId)).equals(d.material)).toBe(true);
    } finally {
      await reader.close();
    }
    void ALL;
  }, 300_000);
});

describe('a vault that goes away (tests in this order: the mid-job one kills the server)', () => {
  let server: StartedVaultServer;
  let dir: string;
  beforeAll(async () => {
    ensureDist(true);
    server = await startVaultServer();
    dir = tempDir('vhdcrypt-azure-faults-');
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });

  test("the server's certificate is checked: with no CA, or another CA as VHDCRYPT_VAULT_CA, exit 5 naming TLS; with its CA it answers", async () => {
    const p = await server.addPrincipal('tls', { secrets: ['get'], keys: [] });
    const other = join(dir, 'other-ca.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=another CA',
      '-days', '1', '-keyout', join(dir, 'other-ca.key'), '-out', other], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const show = (ca: Record<string, string>) => spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'secret', 'show', '-n', 'absent', '--vault', server.url], {
      env: childEnv({ ...ca, AZURE_TENANT_ID: server.tenantId, AZURE_CLIENT_ID: p.clientId, AZURE_CLIENT_SECRET: p.clientSecret, AZURE_AUTHORITY_HOST: server.url }),
      encoding: 'utf8', timeout: 60_000,
    });
    for (const ca of [{}, { VHDCRYPT_VAULT_CA: other }] as Array<Record<string, string>>) {
      const r = show(ca);
      expect(r.status, r.stderr).toBe(5);
      expect(r.stderr, r.stderr).toMatch(/VAULT_UNREACHABLE.*TLS to 127\.0\.0\.1:\d+ failed \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/);
    }
    const ok = show({ VHDCRYPT_VAULT_CA: server.caPath });
    expect(ok.stderr).toMatch(/VAULT_SECRET_NOT_FOUND/);
  }, 90_000);

  test('a wrong client secret: VAULT_AUTH_FAILED (exit 5) in one line naming the credential that failed, without the secret', async () => {
    const p = await server.addPrincipal('wrong', { secrets: ['get'], keys: [] });
    const ca = join(dir, 'ca-auth.pem');
    copyFileSync(server.caPath, ca);
    const bad = `${p.clientSecret}x`;
    const env = childEnv({ VHDCRYPT_VAULT_CA: ca, AZURE_TENANT_ID: server.tenantId, AZURE_CLIENT_ID: p.clientId, AZURE_CLIENT_SECRET: bad, AZURE_AUTHORITY_HOST: server.url });
    const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'secret', 'show', '-n', 'x', '--vault', server.url], { env, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).toMatch(/VAULT_AUTH_FAILED.*(EnvironmentCredential|ClientSecretCredential)/);
    expect(r.stderr).not.toContain(bad);
    expect(r.stderr).not.toContain(p.clientSecret);
  }, 90_000);

  test('stopped mid-job (after the output file appears, before the job settles its secret): typed error, exit 5, no destination file', async () => {
    const job = await server.addPrincipal('job', { secrets: ['get', 'set'], keys: ['get', 'create', 'wrapKey', 'unwrapKey'] });
    const src = join(dir, 'src.raw');
    writeFileSync(src, randomBytes(8 * 1024 * 1024));
    const outDir = join(dir, 'out');
    mkdirSync(outDir);
    const dst = join(outDir, 'enc.img');
    // The helper's stop() removes the server's folder, CA included: the job keeps its own copy, as a client would.
    const ca = join(dir, 'ca.pem');
    copyFileSync(server.caPath, ca);
    const env = childEnv({
      VHDCRYPT_VAULT_CA: ca, AZURE_TENANT_ID: server.tenantId, AZURE_CLIENT_ID: job.clientId, AZURE_CLIENT_SECRET: job.clientSecret,
      AZURE_AUTHORITY_HOST: server.url,
    });
    // The first file the job makes in the destination's folder comes after its seal and before it settles it.
    let killed: Promise<unknown> | null = null;
    const watcher = watch(outDir, () => {
      killed ??= server.stop('SIGKILL');
    });
    try {
      const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
        const child = spawn(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'encrypt', src, dst, '--vault', server.url], { env });
        let err = '';
        child.stderr.on('data', (c) => (err += c));
        child.on('close', (code) => resolve({ code, err }));
      });
      expect(killed, 'the job never wrote into the destination folder').not.toBeNull();
      expect(r.code, r.err).toBe(5);
      expect(r.err.trim().split('\n'), r.err).toHaveLength(1);
      expect(r.err).toMatch(/VAULT_UNREACHABLE|VAULT_AUTH_FAILED/);
      expect(existsSync(dst)).toBe(false);
      expect(readdirSync(outDir).filter((f) => f === 'enc.img')).toEqual([]);
    } finally {
      watcher.close();
    }
  }, 180_000);

  test('nobody listening: a command fails with VAULT_UNREACHABLE naming the host, within the bounded retries', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const a = s.address() as { port: number };
        s.close(() => resolve(a.port));
      });
    });
    const env = childEnv({ AZURE_TENANT_ID: 't', AZURE_CLIENT_ID: 'c', AZURE_CLIENT_SECRET: 's', AZURE_AUTHORITY_HOST: `https://127.0.0.1:${port}` });
    const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'secret', 'show', '-n', 'x', '--vault', `https://127.0.0.1:${port}`], { env, encoding: 'utf8', timeout: 60_000 });
    expect(r.signal).toBeNull();
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`VAULT_(UNREACHABLE|AUTH_FAILED).*127\\.0\\.0\\.1:${port}`));
  }, 90_000);
});
