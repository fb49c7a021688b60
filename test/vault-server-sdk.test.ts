/**
 * `vhdcrypt vault serve` driven by Microsoft's own SDK clients (@azure/identity ClientSecretCredential against
 * the server's token endpoint, SecretClient, KeyClient, CryptographyClient), the CA trusted through the clients'
 * tlsOptions (verification stays on), node:crypto as the oracle where bytes matter.
 */
import { ClientSecretCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { SecretClient } from '@azure/keyvault-secrets';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startVaultServer, type Permissions, type StartedVaultServer } from './helpers/vault-server.js';

let s: StartedVaultServer;
beforeAll(async () => {
  s = await startVaultServer();
}, 90_000);
afterAll(async () => {
  await s?.stop();
});

async function clients(name: string, permissions: Permissions): Promise<{ cred: ClientSecretCredential; secrets: SecretClient; keys: KeyClient; crypto: (id: string) => CryptographyClient }> {
  const { clientId, clientSecret } = await s.addPrincipal(name, permissions);
  const tlsOptions = { ca: s.caPem };
  const cred = new ClientSecretCredential(s.tenantId, clientId, clientSecret, { authorityHost: s.url, disableInstanceDiscovery: true, tlsOptions });
  const options = { disableChallengeResourceVerification: true, tlsOptions };
  return {
    cred,
    secrets: new SecretClient(s.url, cred, options),
    keys: new KeyClient(s.url, cred, options),
    crypto: (id: string) => new CryptographyClient(id, cred, options),
  };
}

describe('vault serve with the Azure SDK', () => {
  test('secrets set and get; keys create, wrap and unwrap (versioned and versionless ids)', async () => {
    const c = await clients('app', { secrets: ['get', 'set'], keys: ['create', 'get', 'wrapKey', 'unwrapKey'] });
    const set = await c.secrets.setSecret('db', 'hello');
    expect(set.value).toBe('hello');
    expect(set.properties.id).toMatch(new RegExp(`^${s.url}/secrets/db/[0-9a-f]{32}$`));
    expect((await c.secrets.getSecret('db')).value).toBe('hello');
    const k = await c.keys.createRsaKey('kek', { keySize: 2048 });
    expect(k.keyType).toBe('RSA');
    const versioned = c.crypto(k.id!);
    const w = await versioned.wrapKey('RSA-OAEP-256', Buffer.alloc(32, 7));
    expect(Buffer.from((await versioned.unwrapKey('RSA-OAEP-256', w.result)).result)).toEqual(Buffer.alloc(32, 7));
    // A versionless id: the SDK posts to /keys/kek//wrapkey; RSA-OAEP is wrapped locally with the public key.
    const latest = c.crypto(`${s.url}/keys/kek`);
    const w2 = await latest.wrapKey('RSA-OAEP', Buffer.alloc(32, 8));
    expect(Buffer.from((await latest.unwrapKey('RSA-OAEP', w2.result)).result)).toEqual(Buffer.alloc(32, 8));
  }, 60_000);
});
