/**
 * A running `vhdcrypt vault serve` for tests: a temp vault (or a given one), the compiled CLI as a real child
 * process on 127.0.0.1 port 0, and what a client needs (URL, tenant, CA). Principals are added through the vault
 * file directly, as the owner does with `vhdcrypt vault principal add` and `vault policy set`; the running server
 * sees them at once.
 *
 *   const s = await startVaultServer();
 *   const { clientId, clientSecret } = await s.addPrincipal('app', { secrets: ['get', 'set'], keys: ['unwrapKey'] });
 *   new SecretClient(s.url, new ClientSecretCredential(s.tenantId, clientId, clientSecret,
 *     { authorityHost: s.url, disableInstanceDiscovery: true, tlsOptions: { ca: s.caPem } }),
 *     { disableChallengeResourceVerification: true, tlsOptions: { ca: s.caPem } });
 *   await s.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openVault, type KeyPermission, type SecretPermission } from '../../src/vault/index.js';
import { ensureDist, root } from '../fixtures/vault/dist.js';

export interface VaultServerStartOptions {
  /** Serve this existing vault directory (e.g. to restart after a crash); default: a new temp vault, removed by stop(). */
  readonly vaultDir?: string;
  /** Access token lifetime in seconds (default 3600). */
  readonly tokenLifetime?: number;
  /** More `vault serve` arguments. */
  readonly args?: readonly string[];
  /** More environment for the server process. */
  readonly env?: Readonly<Record<string, string>>;
}

export interface Permissions {
  readonly secrets?: readonly SecretPermission[];
  readonly keys?: readonly KeyPermission[];
}

export interface StartedVaultServer {
  /** https://127.0.0.1:PORT: the vault URL and the authority host. */
  readonly url: string;
  readonly tenantId: string;
  readonly caPath: string;
  readonly caPem: string;
  readonly vaultDir: string;
  /** For child processes (the CLI, other tools): the vault, the CA trusted, the Azure identity variables but the client's. */
  readonly env: Readonly<Record<string, string>>;
  /** The server's process. */
  readonly process: ChildProcess;
  /** Add a principal with these permissions; its client credentials. */
  addPrincipal(name: string, permissions?: Permissions): Promise<{ clientId: string; clientSecret: string }>;
  /** Stop the server (SIGTERM by default) and, unless the vault was given, remove it; resolves to the exit code or signal. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

const START_TIMEOUT_MS = 60_000;

export async function startVaultServer(opts: VaultServerStartOptions = {}): Promise<StartedVaultServer> {
  ensureDist(true);
  let tempRoot: string | null = null;
  let vaultDir = opts.vaultDir;
  if (vaultDir === undefined) {
    tempRoot = mkdtempSync(join(tmpdir(), 'vhdcrypt-vault-serve-'));
    vaultDir = join(tempRoot, 'vault');
    const v = await openVault(`file:${vaultDir}`, { create: true, exclusive: true, passphrase: '' });
    await v.close();
  }
  const baseEnv = { ...process.env };
  delete baseEnv.VHDCRYPT_VAULT_TOKEN;
  delete baseEnv.VHDCRYPT_VAULT_PASSPHRASE;
  const args = [
    join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'serve', '--vault', `file:${vaultDir}`, '--listen', '127.0.0.1:0', '--json',
    ...(opts.tokenLifetime !== undefined ? ['--token-lifetime', String(opts.tokenLifetime)] : []),
    ...(opts.args ?? []),
  ];
  const child = spawn(process.execPath, args, { env: { ...baseEnv, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const shown = await new Promise<{ url: string; tenantId: string; caPath: string }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vault serve did not start within ${START_TIMEOUT_MS} ms: ${stderr}`));
    }, START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      try {
        const o = JSON.parse(out) as { url: string; tenantId: string; caPath: string };
        clearTimeout(timer);
        resolve(o);
      } catch {
        // Not the whole object yet.
      }
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`vault serve exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
  const caPem = readFileSync(shown.caPath, 'utf8');
  const dir = vaultDir;
  let stopped: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> | null = null;
  return {
    url: shown.url,
    tenantId: shown.tenantId,
    caPath: shown.caPath,
    caPem,
    vaultDir: dir,
    process: child,
    env: {
      VHDCRYPT_VAULT: dir,
      NODE_EXTRA_CA_CERTS: shown.caPath,
      AZURE_TENANT_ID: shown.tenantId,
      AZURE_AUTHORITY_HOST: shown.url,
    },
    async addPrincipal(name, permissions = {}) {
      const v = await openVault(`file:${dir}`, { create: false, passphrase: '' });
      try {
        const p = await v.addPrincipal(name);
        await v.setAccessPolicy(name, { secrets: [...(permissions.secrets ?? [])], keys: [...(permissions.keys ?? [])] });
        return { clientId: p.clientId!, clientSecret: p.clientSecret! };
      } finally {
        await v.close();
      }
    },
    stop(signal = 'SIGTERM') {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        const r = await exited;
        if (tempRoot !== null) rmSync(tempRoot, { recursive: true, force: true });
        return { ...r, stderr };
      })();
      return stopped;
    },
  };
}
