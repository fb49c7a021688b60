/**
 * The https: provider's credential: when the environment configures DefaultAzureCredential's EnvironmentCredential
 * (and AZURE_TOKEN_CREDENTIALS keeps it first), that credential is made alone, and it answers exactly as
 * DefaultAzureCredential does (the same token, the same error); otherwise DefaultAzureCredential's whole chain
 * runs, AZURE_TOKEN_CREDENTIALS honoured. Against `vhdcrypt vault serve` as the authority.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isBuiltin } from 'node:module';
import { DefaultAzureCredential } from '@azure/identity';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { credentialOf, environmentCredentialDecides, pipelineOptions } from '../src/vault/azure/connection.js';
import { startVaultServer, type StartedVaultServer } from './helpers/vault-server.js';
import { TOOL_ENV } from './helpers/nbd-harness.js';
import { root } from './fixtures/vault/dist.js';

const AZURE_VARS = [
  'AZURE_TENANT_ID', 'AZURE_CLIENT_ID', 'AZURE_CLIENT_SECRET', 'AZURE_CLIENT_CERTIFICATE_PATH', 'AZURE_USERNAME', 'AZURE_PASSWORD',
  'AZURE_TOKEN_CREDENTIALS', 'AZURE_AUTHORITY_HOST', 'VHDCRYPT_VAULT_CA',
];

/** Run `fn` with exactly these AZURE_* variables (and VHDCRYPT_VAULT_CA) in process.env, restored after. */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(AZURE_VARS.map((k) => [k, process.env[k]]));
  for (const k of AZURE_VARS) delete process.env[k];
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const k of AZURE_VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

describe('environmentCredentialDecides: when EnvironmentCredential alone is DefaultAzureCredential', () => {
  const ids = { AZURE_TENANT_ID: 't', AZURE_CLIENT_ID: 'c' };
  test.each([
    ['tenant, client and secret', { ...ids, AZURE_CLIENT_SECRET: 's' }, true],
    ['tenant, client and certificate', { ...ids, AZURE_CLIENT_CERTIFICATE_PATH: '/x.pem' }, true],
    ['tenant, client, user name and password', { ...ids, AZURE_USERNAME: 'u', AZURE_PASSWORD: 'p' }, true],
    ['AZURE_TOKEN_CREDENTIALS=prod (environment first)', { ...ids, AZURE_CLIENT_SECRET: 's', AZURE_TOKEN_CREDENTIALS: 'prod' }, true],
    ['AZURE_TOKEN_CREDENTIALS=EnvironmentCredential', { ...ids, AZURE_CLIENT_SECRET: 's', AZURE_TOKEN_CREDENTIALS: ' EnvironmentCredential ' }, true],
    ['no secret, certificate or password', { ...ids }, false],
    ['a user name without a password', { ...ids, AZURE_USERNAME: 'u' }, false],
    ['no tenant', { AZURE_CLIENT_ID: 'c', AZURE_CLIENT_SECRET: 's' }, false],
    ['no client id', { AZURE_TENANT_ID: 't', AZURE_CLIENT_SECRET: 's' }, false],
    ['AZURE_TOKEN_CREDENTIALS=dev (no environment credential)', { ...ids, AZURE_CLIENT_SECRET: 's', AZURE_TOKEN_CREDENTIALS: 'dev' }, false],
    ['AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential', { ...ids, AZURE_CLIENT_SECRET: 's', AZURE_TOKEN_CREDENTIALS: 'ManagedIdentityCredential' }, false],
    ['AZURE_TOKEN_CREDENTIALS not a valid value (DefaultAzureCredential refuses it)', { ...ids, AZURE_CLIENT_SECRET: 's', AZURE_TOKEN_CREDENTIALS: 'nonsense' }, false],
  ] as const)('%s: %s', (_name, env, expected) => {
    expect(environmentCredentialDecides(env)).toBe(expected);
  });
});

describe('the credential against vault serve as the authority', () => {
  let server: StartedVaultServer;
  let principal: { clientId: string; clientSecret: string };
  beforeAll(async () => {
    server = await startVaultServer();
    principal = await server.addPrincipal('cred', { secrets: ['get'], keys: [] });
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
  });

  const scopes = () => [`${server.url}/.default`];
  const vars = (secret: string) => ({
    AZURE_TENANT_ID: server.tenantId, AZURE_CLIENT_ID: principal.clientId, AZURE_CLIENT_SECRET: secret, AZURE_AUTHORITY_HOST: server.url,
  });
  /** credentialOf's credential and DefaultAzureCredential, each made as the provider makes it, asked for a token. */
  const both = (secret: string) => withEnv(vars(secret), async () => {
    const { options, agent } = pipelineOptions({ caPem: server.caPem });
    try {
      const ours = await credentialOf({}, options);
      const dac = new DefaultAzureCredential({ ...(options as object), authorityHost: server.url, disableInstanceDiscovery: true });
      return await Promise.all([ours, dac].map((c) => c.getToken(scopes()).then(
        (t) => ({ ok: true as const, token: t?.token ?? '' }),
        (e: Error) => ({ ok: false as const, name: e.name, message: e.message }),
      )));
    } finally {
      agent?.destroy();
    }
  });

  test('the right secret: a token from each, both accepted by the vault', async () => {
    const [ours, dac] = await both(principal.clientSecret);
    expect(ours.ok && dac.ok).toBe(true);
    for (const r of [ours, dac]) {
      const token = r.ok ? r.token : '';
      const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { aud?: string; appid?: string };
      expect(claims.aud).toBe(server.url);
      expect(claims.appid).toBe(principal.clientId.toLowerCase());
    }
  }, 60_000);

  test('a wrong secret: the same error as DefaultAzureCredential gives (EnvironmentCredential failed)', async () => {
    const [ours, dac] = await both(`${principal.clientSecret}x`);
    expect(ours.ok).toBe(false);
    expect(dac.ok).toBe(false);
    const text = (r: typeof ours) => (r.ok ? '' : `${r.name}: ${r.message}`)
      // Each token request carries its own trace and correlation ids and timestamp.
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'ID').replace(/\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\dZ?/g, 'TIME');
    expect(text(ours)).toBe(text(dac));
    expect(text(ours)).toMatch(/^AuthenticationError: EnvironmentCredential authentication failed/);
  }, 60_000);

  test('AZURE_TOKEN_CREDENTIALS choosing another credential is honoured: the environment\'s secret is not used', () => {
    const env: NodeJS.ProcessEnv = { ...TOOL_ENV };
    for (const k of ['NODE_EXTRA_CA_CERTS', 'VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', ...AZURE_VARS]) delete env[k];
    Object.assign(env, vars(principal.clientSecret), { VHDCRYPT_VAULT_CA: server.caPath, AZURE_TOKEN_CREDENTIALS: 'AzureCliCredential', PATH: '/nonexistent' });
    const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.cjs'), 'vault', 'secret', 'show', '-n', 'x', '--vault', server.url], { env, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/VAULT_AUTH_FAILED.*(AzureCliCredential|Azure CLI)/);
    expect(r.stderr).not.toMatch(/EnvironmentCredential|ClientSecretCredential/);
  }, 60_000);
});

test('the CLI bundle carries the packages the Azure SDKs load (no separate CommonJS loads at run time)', () => {
  // The packages the CLI may leave in node_modules are the project's own (native addons, what its code imports);
  // a package only the SDKs depend on (jsonwebtoken, semver, the proxy agents) is in the bundle.
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<'dependencies' | 'devDependencies' | 'optionalDependencies', Record<string, string> | undefined>;
  const ownExternal = new Set([pkg.dependencies, pkg.devDependencies, pkg.optionalDependencies].flatMap((d) => Object.keys(d ?? {})));
  const dir = join(root, 'dist', 'cli');
  const imported = new Set<string>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.cjs'))) {
    // The bundle is CommonJS: require("x") for static and bundled dynamic imports, import("x") for a package's dynamic one.
    for (const m of readFileSync(join(dir, f), 'utf8').matchAll(/\brequire\("([^"]+)"\)|\bimport\("([^"]+)"\)/g)) {
      const spec = m[1] ?? m[2]!;
      if (spec.startsWith('.') || isBuiltin(spec)) continue;
      imported.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  expect([...imported].filter((p) => !ownExternal.has(p) || p.startsWith('@azure/'))).toEqual([]);
  // The SDKs' chunks are all ASCII (V8 then holds their source at one byte per character).
  const sdkChunks = readdirSync(dir).filter((n) => n.endsWith('.cjs') && /\/\/ node_modules\/@azure\/(keyvault-secrets|msal-node)\//.test(readFileSync(join(dir, n), 'utf8')));
  expect(sdkChunks).toHaveLength(2);
  for (const n of sdkChunks) expect(readFileSync(join(dir, n), 'utf8')).toMatch(/^[\x00-\x7f]*$/);
});

test('the CLI bundle loads each vault provider only for its own URIs: neither the SDKs nor the embedded vault on every run', () => {
  const dir = join(root, 'dist', 'cli');
  // Static imports are the top-level requires (`const require_x = require("./x.cjs")`); dynamic ones are
  // `Promise.resolve().then(() => require(...))` inside functions.
  const staticImports = (file: string) => [...readFileSync(join(dir, file), 'utf8').matchAll(/(?:^|\n)(?:const \w+ = )?require\("\.\/([^"]+)"\)/g)].map((m) => m[1]!);
  const loaded = new Set<string>();
  const queue = ['main.cjs'];
  while (queue.length > 0) {
    const f = queue.pop()!;
    if (loaded.has(f)) continue;
    loaded.add(f);
    queue.push(...staticImports(f));
  }
  const code = [...loaded].map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
  const everyChunk = readdirSync(dir).filter((n) => n.endsWith('.cjs')).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
  expect(code).toContain('openVault');
  // The Key Vault SDKs, MSAL (found by the module comments rolldown writes before each bundled module: the packages
  // are minified, their class names not as written), the embedded vault's class: each only behind a dynamic import.
  const markers = [/\/\/ node_modules\/@azure\/keyvault-secrets\//, /\/\/ node_modules\/@azure\/keyvault-keys\//, /\/\/ node_modules\/@azure\/msal-node\//, /class LocalVault\b/];
  for (const marker of markers) expect(everyChunk).toMatch(marker);
  for (const marker of markers) expect(code).not.toMatch(marker);
});
