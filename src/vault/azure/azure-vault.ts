/**
 * The Azure Key Vault provider: the Vault interface on Microsoft's SDKs (SecretClient, KeyClient,
 * CryptographyClient). Unwrap and decrypt always run in the vault (CryptographyClient sends them there); the
 * provider never asks for private key material. RSA-OAEP wrap and encrypt run in this process with the key's
 * public part, as the SDK does them (the result is the same bytes the vault would return).
 *
 * What Key Vault's data plane has no operation for (principals, access policies, the audit log, vault
 * properties) is VAULT_UNSUPPORTED_PROVIDER, or a documented stand-in (getProperties, recordAuditEvent): see
 * the README's provider table.
 */
import type { TokenCredential } from '@azure/identity';
import {
  KeyClient, parseKeyVaultKeyIdentifier, type CryptographyClient,
  type JsonWebKey as AzureJwk, type KeyProperties as AzureKeyProperties, type KeyVaultKey,
} from '@azure/keyvault-keys';
import { SecretClient, type SecretProperties as AzureSecretProperties } from '@azure/keyvault-secrets';
import type { Agent } from 'node:https';
import { VaultError } from '../errors.js';
import { assertName, assertSecretValue, checkTags } from '../limits.js';
import { objectId, resolveRef } from '../object-id.js';
import type {
  AccessPolicy, AttributesUpdate, AuditEntry, CreateKeyOptions, DeletedObject, EncryptAlgorithm, EncryptResult, ImportKeyOptions, JsonWebKey,
  KeyProperties, KeyType, PrincipalInfo, Secret, SecretProperties, SecretUpdate, SetSecretOptions, Vault, VaultKey, VaultProperties,
  VaultPropertiesUpdate, WrapAlgorithm, WrapResult,
} from '../types.js';
import { credentialOf, pipelineOptions, type AzureConnectionOptions } from './connection.js';
import { vaultErrorOf, type CallContext } from './rest-errors.js';

/** Key Vault's DNS suffixes: their challenge resource matches the vault's host, so its check stays on. */
const KEY_VAULT_SUFFIXES = ['.vault.azure.net', '.vault.azure.cn', '.vault.usgovcloudapi.net', '.managedhsm.azure.net', '.managedhsm.azure.cn', '.managedhsm.usgovcloudapi.net'];
/** Azure's KEK default: RSA-3072 (Key Vault vaults hold RSA keys; 3072 bits for a key kept for years). */
const AZURE_KEK_RSA_BITS = 3072;
const RSA_KEY_OPS = ['wrapKey', 'unwrapKey', 'encrypt', 'decrypt'];
const OCT_KEY_OPS = ['wrapKey', 'unwrapKey'];
/** Soft-delete waits: Key Vault deletes and recovers asynchronously; vault serve at once. */
const POLL = { intervalInMs: 200 };

export interface AzureVaultOptions extends AzureConnectionOptions {}

/** `https://host[:port]` with no path, lower-case: the prefix of every object id this provider returns. */
export function azureVaultUri(uri: string): string {
  let u: URL;
  try {
    u = new URL(uri);
  } catch (e) {
    throw new VaultError('VAULT_BAD_ID', `bad vault URI ${JSON.stringify(uri.slice(0, 200))}`, { cause: e });
  }
  if (u.protocol !== 'https:') throw new VaultError('VAULT_UNSUPPORTED_PROVIDER', `Key Vault is reached over https:, not ${u.protocol}`);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username || u.password) {
    throw new VaultError('VAULT_BAD_ID', `a Key Vault URI is https://NAME.vault.azure.net (no path, query or user): ${JSON.stringify(uri.slice(0, 200))}`);
  }
  return u.origin.toLowerCase();
}

function unsupported(what: string, instead: string): never {
  throw new VaultError('VAULT_UNSUPPORTED_PROVIDER', `${what}: Azure Key Vault's data plane has no such operation (${instead})`);
}

function b64u(b: Uint8Array | undefined): string | undefined {
  return b === undefined ? undefined : Buffer.from(b).toString('base64url');
}

function ktyOf(kty: string | undefined): KeyType {
  return kty === 'oct' || kty === 'oct-HSM' ? 'oct' : 'RSA';
}

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Oldest first; Key Vault's dates are whole seconds, so versions made in one second keep the service's order. */
function byCreated<T extends { created: Date }>(list: T[]): T[] {
  return list.map((x, i) => ({ x, i })).sort((a, b) => a.x.created.getTime() - b.x.created.getTime() || a.i - b.i).map((p) => p.x);
}

/** What every handle on one vault shares within a process: clients, credential (and so its cached token), TLS sessions. */
interface Connection {
  readonly secrets: SecretClient;
  readonly keys: KeyClient;
  readonly credential: TokenCredential;
  readonly agent: Agent | undefined;
  /** One CryptographyClient per key id, each on the KeyClient's pipeline. */
  readonly crypto: Map<string, CryptographyClient>;
}

/**
 * Connections made with the environment's credential, by vault and environment: a job opens its vault several
 * times (leftover check, seal, settle), and each fresh credential would fetch a token again. Idle keep-alive
 * sockets do not hold a process open.
 */
const shared = new Map<string, Promise<Connection>>();

async function connect(base: string, o: AzureVaultOptions): Promise<Connection> {
  const { options, agent } = pipelineOptions(o);
  const credential = await credentialOf(o, options);
  const host = new URL(base).hostname;
  // Outside Key Vault's own domains (vault serve, an emulator) the challenge's resource cannot match the host.
  const clientOptions = { ...options, disableChallengeResourceVerification: !KEY_VAULT_SUFFIXES.some((s) => host.endsWith(s)) };
  return { secrets: new SecretClient(base, credential, clientOptions), keys: new KeyClient(base, credential, clientOptions), credential, agent, crypto: new Map() };
}

export class AzureVault implements Vault {
  readonly principal: string;
  readonly kekRsaBits = AZURE_KEK_RSA_BITS;
  private readonly secrets: SecretClient;
  private readonly keys: KeyClient;
  private closed = false;

  private constructor(readonly uri: string, private readonly conn: Connection, private readonly owned: boolean) {
    this.principal = 'azure';
    this.secrets = conn.secrets;
    this.keys = conn.keys;
  }

  static async open(uri: string, o: AzureVaultOptions = {}): Promise<AzureVault> {
    const base = azureVaultUri(uri);
    if (o.credential) return new AzureVault(base, await connect(base, o), true);
    const e = process.env;
    const key = JSON.stringify([base, o.caPem ?? null, e.VHDCRYPT_VAULT_CA, e.AZURE_TENANT_ID, e.AZURE_CLIENT_ID, e.AZURE_CLIENT_SECRET, e.AZURE_CLIENT_CERTIFICATE_PATH, e.AZURE_AUTHORITY_HOST]);
    let c = shared.get(key);
    if (!c) {
      c = connect(base, o);
      shared.set(key, c);
      // A failed connection (a bad CA file) is not kept: the next open tries again.
      c.catch(() => shared.delete(key));
    }
    return new AzureVault(base, await c, false);
  }

  /**
   * Run one SDK call, its failure as a typed error. With `live` (a call on a live object by name), a 404 is
   * told apart as the file vault tells it: a soft-deleted object is VAULT_DELETED (one more call, on the
   * failure path only, needing list permission; without it the 404 stays NOT_FOUND).
   */
  private async call<T>(ctx: CallContext, fn: () => Promise<T>, live?: string): Promise<T> {
    if (this.closed) throw new VaultError('VAULT_CLOSED', `vault ${this.uri} is closed`);
    try {
      return await fn();
    } catch (e) {
      const err = vaultErrorOf(e, this.uri, ctx);
      if (live !== undefined && (err.code === 'VAULT_SECRET_NOT_FOUND' || err.code === 'VAULT_KEY_NOT_FOUND') && await this.isDeleted(ctx.kind, live)) {
        throw new VaultError('VAULT_DELETED', `${ctx.what}: ${ctx.kind === 'keys' ? 'key' : 'secret'} '${live}' is soft-deleted (recover it, or purge it for good)`);
      }
      throw err;
    }
  }

  private async isDeleted(kind: CallContext['kind'], name: string): Promise<boolean> {
    try {
      if (kind === 'secrets') await this.secrets.getDeletedSecret(name);
      else if (kind === 'keys') await this.keys.getDeletedKey(name);
      else return false;
      return true;
    } catch {
      // Not deleted, or not allowed to say: the original 404 stands.
      return false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.owned) this.conn.agent?.destroy();
  }

  // Vault properties live in the management plane (Microsoft.KeyVault/vaults), which this provider does not call.
  async getProperties(): Promise<VaultProperties> {
    return { uri: this.uri, enabledForDiskEncryption: true, softDeleteRetentionDays: 90, purgeProtection: false, created: new Date(0) };
  }

  setProperties(_update: VaultPropertiesUpdate): Promise<VaultProperties> {
    return unsupported('vault set-property', 'az keyvault update --enabled-for-disk-encryption / --retention-days / --enable-purge-protection');
  }

  // ---- secrets ----

  private secretProps(p: AzureSecretProperties): SecretProperties {
    return {
      id: objectId(this.uri, 'secrets', p.name, p.version || undefined),
      name: p.name,
      version: p.version ?? '',
      contentType: p.contentType ?? null,
      tags: { ...p.tags },
      enabled: p.enabled ?? true,
      notBefore: p.notBefore ?? null,
      expiresOn: p.expiresOn ?? null,
      created: p.createdOn ?? new Date(0),
      updated: p.updatedOn ?? p.createdOn ?? new Date(0),
    };
  }

  async setSecret(name: string, value: string, options: SetSecretOptions = {}): Promise<SecretProperties> {
    assertName(name, 'secret');
    assertSecretValue(value);
    const tags = checkTags(options.tags);
    const s = await this.call({ kind: 'secrets', what: `set secret '${name}'` }, () => this.secrets.setSecret(name, value, {
      contentType: options.contentType, tags, enabled: options.enabled,
      notBefore: options.notBefore ?? undefined, expiresOn: options.expiresOn ?? undefined,
    }));
    return this.secretProps(s.properties);
  }

  async getSecret(nameOrId: string, version?: string): Promise<Secret> {
    const r = resolveRef(this.uri, 'secrets', nameOrId, version);
    const s = await this.call({ kind: 'secrets', what: `get secret '${r.name}'${r.version ? ` version ${r.version}` : ''}` }, () => this.secrets.getSecret(r.name, { version: r.version }), r.name);
    if (typeof s.value !== 'string') throw new VaultError('VAULT_SECRET_NOT_FOUND', `secret ${objectId(this.uri, 'secrets', r.name, r.version)} has no value`);
    return { value: s.value, properties: this.secretProps(s.properties) };
  }

  async listSecrets(): Promise<SecretProperties[]> {
    const list = await this.call({ kind: 'secrets', what: 'list secrets' }, () => all(this.secrets.listPropertiesOfSecrets()));
    return list.map((p) => this.secretProps(p));
  }

  async listSecretVersions(name: string): Promise<SecretProperties[]> {
    assertName(name, 'secret');
    const list = await this.call({ kind: 'secrets', what: `list versions of secret '${name}'` }, () => all(this.secrets.listPropertiesOfSecretVersions(name)), name);
    return byCreated(list.map((p) => this.secretProps(p)));
  }

  /** The latest version's id of a secret: its get, else (a latest refused for its attributes) its version list. */
  private async latestSecretVersion(name: string): Promise<string> {
    try {
      return (await this.getSecret(name)).properties.version;
    } catch (e) {
      if (!(e instanceof VaultError) || !['VAULT_SECRET_DISABLED', 'VAULT_SECRET_NOT_YET_VALID', 'VAULT_SECRET_EXPIRED'].includes(e.code)) throw e;
      const v = (await this.listSecretVersions(name)).at(-1);
      if (!v) throw e;
      return v.version;
    }
  }

  async updateSecretProperties(nameOrId: string, version: string | undefined, update: SecretUpdate): Promise<SecretProperties> {
    const r = resolveRef(this.uri, 'secrets', nameOrId, version);
    const v = r.version ?? await this.latestSecretVersion(r.name);
    const tags = update.tags === undefined ? undefined : checkTags(update.tags);
    const p = await this.call({ kind: 'secrets', what: `update secret '${r.name}' version ${v}` }, () => this.secrets.updateSecretProperties(r.name, v, {
      enabled: update.enabled, tags, contentType: update.contentType ?? undefined,
      // null clears a date: sent as JSON null, as Key Vault's PATCH takes it.
      notBefore: update.notBefore as Date | undefined, expiresOn: update.expiresOn as Date | undefined,
    }));
    return this.secretProps(p);
  }

  private deleted(kind: 'secrets' | 'keys', name: string, p: { deletedOn?: Date; scheduledPurgeDate?: Date }): DeletedObject {
    return { id: objectId(this.uri, kind, name), name, deletedOn: p.deletedOn ?? new Date(), scheduledPurgeDate: p.scheduledPurgeDate ?? new Date(0) };
  }

  async deleteSecret(name: string): Promise<DeletedObject> {
    assertName(name, 'secret');
    const d = await this.call({ kind: 'secrets', what: `delete secret '${name}'` }, async () => (await this.secrets.beginDeleteSecret(name, POLL)).pollUntilDone());
    return this.deleted('secrets', name, d.properties);
  }

  async listDeletedSecrets(): Promise<Array<DeletedObject & { properties: SecretProperties }>> {
    const list = await this.call({ kind: 'secrets', what: 'list deleted secrets' }, () => all(this.secrets.listDeletedSecrets()));
    return list.map((d) => ({ ...this.deleted('secrets', d.properties.name, d.properties), properties: this.secretProps(d.properties) }));
  }

  async recoverDeletedSecret(name: string): Promise<SecretProperties> {
    assertName(name, 'secret');
    // The SDK's recover poller first looks for a live secret and returns it: a live one is not recovered.
    await this.refuseLive('secrets', name, 'recover');
    const s = await this.call({ kind: 'secrets', what: `recover secret '${name}'` }, async () => (await this.secrets.beginRecoverDeletedSecret(name, POLL)).pollUntilDone());
    return this.secretProps(s);
  }

  async purgeDeletedSecret(name: string): Promise<void> {
    assertName(name, 'secret');
    await this.notDeletedIfLive('secrets', name, () => this.call({ kind: 'secrets', what: `purge secret '${name}'` }, () => this.secrets.purgeDeletedSecret(name)));
  }

  /** True when a live object of that name exists (get answers, or refuses for its attributes, not for absence). */
  private async isLive(kind: 'secrets' | 'keys', name: string): Promise<boolean> {
    try {
      if (kind === 'secrets') await this.getSecret(name);
      else await this.getKey(name);
      return true;
    } catch (e) {
      if (!(e instanceof VaultError)) throw e;
      return !['VAULT_SECRET_NOT_FOUND', 'VAULT_KEY_NOT_FOUND', 'VAULT_DELETED', 'VAULT_FORBIDDEN'].includes(e.code);
    }
  }

  private async refuseLive(kind: 'secrets' | 'keys', name: string, what: string): Promise<void> {
    if (await this.isLive(kind, name)) throw new VaultError('VAULT_NOT_DELETED', `${what} ${kind === 'keys' ? 'key' : 'secret'} '${name}': it is not deleted`);
  }

  /** Key Vault answers 404 for a purge of a live object: told apart as the file vault tells it (VAULT_NOT_DELETED). */
  private async notDeletedIfLive<T>(kind: 'secrets' | 'keys', name: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof VaultError && (e.code === 'VAULT_SECRET_NOT_FOUND' || e.code === 'VAULT_KEY_NOT_FOUND')) await this.refuseLive(kind, name, 'purge');
      throw e;
    }
  }

  async backupSecret(name: string): Promise<Uint8Array> {
    assertName(name, 'secret');
    const b = await this.call({ kind: 'secrets', what: `back up secret '${name}'` }, () => this.secrets.backupSecret(name));
    if (!b) throw new VaultError('VAULT_BAD_BACKUP', `the vault returned no backup of secret '${name}'`);
    return b;
  }

  async restoreSecretBackup(blob: Uint8Array): Promise<SecretProperties> {
    const p = await this.call({ kind: 'secrets', what: 'restore a secret backup' }, () => this.secrets.restoreSecretBackup(blob));
    return this.secretProps(p);
  }

  // ---- keys ----

  private keyProps(p: AzureKeyProperties, kty: KeyType, keySize: number): KeyProperties {
    return {
      id: objectId(this.uri, 'keys', p.name, p.version || undefined),
      name: p.name,
      version: p.version ?? '',
      kty,
      keySize,
      tags: { ...p.tags },
      enabled: p.enabled ?? true,
      notBefore: p.notBefore ?? null,
      expiresOn: p.expiresOn ?? null,
      created: p.createdOn ?? new Date(0),
      updated: p.updatedOn ?? p.createdOn ?? new Date(0),
    };
  }

  private vaultKey(k: KeyVaultKey): VaultKey {
    const kty = ktyOf(k.keyType ?? k.key?.kty);
    const n = k.key?.n;
    const props = this.keyProps(k.properties, kty, kty === 'oct' ? 256 : (n ? n.length * 8 : 0));
    return {
      key: { kid: props.id, kty, key_ops: [...(k.key?.keyOps ?? [])], ...(kty === 'RSA' ? { n: b64u(n), e: b64u(k.key?.e) } : {}) },
      properties: props,
    };
  }

  async createKey(name: string, options: CreateKeyOptions): Promise<VaultKey> {
    assertName(name, 'key');
    if (options.onlyIfAbsent) {
      // Not atomic on Key Vault (no create-if-absent): two first uses at once can each add a version; either opens.
      try {
        return await this.getKey(name);
      } catch (e) {
        if (!(e instanceof VaultError) || e.code !== 'VAULT_KEY_NOT_FOUND') throw e;
      }
    }
    if (options.kty !== 'RSA' && options.kty !== 'oct') throw new VaultError('VAULT_INVALID_KEY', `unsupported key type ${JSON.stringify(options.kty)}; RSA or oct`);
    const tags = checkTags(options.tags);
    const k = await this.call({ kind: 'keys', what: `create key '${name}'` }, () => this.keys.createKey(name, options.kty, {
      keySize: options.size ?? (options.kty === 'RSA' ? 2048 : 256), keyOps: options.kty === 'RSA' ? RSA_KEY_OPS : OCT_KEY_OPS, tags,
      enabled: options.enabled, notBefore: options.notBefore ?? undefined, expiresOn: options.expiresOn ?? undefined,
    }));
    return this.vaultKey(k);
  }

  async importKey(name: string, jwk: JsonWebKey, options: ImportKeyOptions = {}): Promise<VaultKey> {
    assertName(name, 'key');
    if (jwk === null || typeof jwk !== 'object' || (jwk.kty !== 'RSA' && jwk.kty !== 'oct')) throw new VaultError('VAULT_INVALID_KEY', 'import takes an RSA or oct JWK');
    const bytes = (s: unknown) => (typeof s === 'string' ? new Uint8Array(Buffer.from(s, 'base64url')) : undefined);
    const key: AzureJwk = jwk.kty === 'oct'
      ? { kty: 'oct', k: bytes(jwk.k), keyOps: OCT_KEY_OPS }
      : { kty: 'RSA', n: bytes(jwk.n), e: bytes(jwk.e), d: bytes(jwk.d), p: bytes(jwk.p), q: bytes(jwk.q), dp: bytes(jwk.dp), dq: bytes(jwk.dq), qi: bytes(jwk.qi), keyOps: RSA_KEY_OPS };
    try {
      const tags = checkTags(options.tags);
      const k = await this.call({ kind: 'keys', what: `import key '${name}'` }, () => this.keys.importKey(name, key, {
        tags, enabled: options.enabled, notBefore: options.notBefore ?? undefined, expiresOn: options.expiresOn ?? undefined,
      }));
      return this.vaultKey(k);
    } finally {
      for (const f of ['k', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) key[f]?.fill(0);
    }
  }

  async getKey(nameOrId: string, version?: string): Promise<VaultKey> {
    const r = resolveRef(this.uri, 'keys', nameOrId, version);
    const k = await this.call({ kind: 'keys', what: `get key '${r.name}'${r.version ? ` version ${r.version}` : ''}` }, () => this.keys.getKey(r.name, { version: r.version }), r.name);
    return this.vaultKey(k);
  }

  /** Key Vault's key lists carry no type or size: each version's own get supplies them. */
  private async withKeyDetails(list: AzureKeyProperties[]): Promise<KeyProperties[]> {
    return Promise.all(list.map(async (p) => {
      try {
        return (await this.getKey(p.name, p.version || undefined)).properties;
      } catch (e) {
        if (!(e instanceof VaultError) || e.code !== 'VAULT_FORBIDDEN') throw e;
        return this.keyProps(p, 'RSA', 0);
      }
    }));
  }

  async listKeys(): Promise<KeyProperties[]> {
    const list = await this.call({ kind: 'keys', what: 'list keys' }, () => all(this.keys.listPropertiesOfKeys()));
    return this.withKeyDetails(list);
  }

  async listKeyVersions(name: string): Promise<KeyProperties[]> {
    assertName(name, 'key');
    const list = await this.call({ kind: 'keys', what: `list versions of key '${name}'` }, () => all(this.keys.listPropertiesOfKeyVersions(name)), name);
    return byCreated(await this.withKeyDetails(list));
  }

  async updateKeyProperties(nameOrId: string, version: string | undefined, update: AttributesUpdate): Promise<KeyProperties> {
    const r = resolveRef(this.uri, 'keys', nameOrId, version);
    const v = r.version ?? (await this.getKey(r.name)).properties.version;
    const tags = update.tags === undefined ? undefined : checkTags(update.tags);
    const k = await this.call({ kind: 'keys', what: `update key '${r.name}' version ${v}` }, () => this.keys.updateKeyProperties(r.name, v, {
      enabled: update.enabled, tags, notBefore: update.notBefore as Date | undefined, expiresOn: update.expiresOn as Date | undefined,
    }));
    return this.vaultKey(k).properties;
  }

  async rotateKey(name: string): Promise<VaultKey> {
    assertName(name, 'key');
    return this.vaultKey(await this.call({ kind: 'keys', what: `rotate key '${name}'` }, () => this.keys.rotateKey(name)));
  }

  async deleteKey(name: string): Promise<DeletedObject> {
    assertName(name, 'key');
    const d = await this.call({ kind: 'keys', what: `delete key '${name}'` }, async () => (await this.keys.beginDeleteKey(name, POLL)).pollUntilDone());
    return this.deleted('keys', name, d.properties);
  }

  async listDeletedKeys(): Promise<Array<DeletedObject & { properties: KeyProperties }>> {
    const list = await this.call({ kind: 'keys', what: 'list deleted keys' }, () => all(this.keys.listDeletedKeys()));
    return list.map((d) => {
      const kty = ktyOf(d.keyType ?? d.key?.kty);
      return { ...this.deleted('keys', d.properties.name, d.properties), properties: this.keyProps(d.properties, kty, kty === 'oct' ? 256 : (d.key?.n?.length ?? 0) * 8) };
    });
  }

  async recoverDeletedKey(name: string): Promise<KeyProperties> {
    assertName(name, 'key');
    await this.refuseLive('keys', name, 'recover');
    const k = await this.call({ kind: 'keys', what: `recover key '${name}'` }, async () => (await this.keys.beginRecoverDeletedKey(name, POLL)).pollUntilDone());
    return this.vaultKey(k).properties;
  }

  async purgeDeletedKey(name: string): Promise<void> {
    assertName(name, 'key');
    await this.notDeletedIfLive('keys', name, () => this.call({ kind: 'keys', what: `purge key '${name}'` }, () => this.keys.purgeDeletedKey(name)));
  }

  async backupKey(name: string): Promise<Uint8Array> {
    assertName(name, 'key');
    const b = await this.call({ kind: 'keys', what: `back up key '${name}'` }, () => this.keys.backupKey(name));
    if (!b) throw new VaultError('VAULT_BAD_BACKUP', `the vault returned no backup of key '${name}'`);
    return b;
  }

  async restoreKeyBackup(blob: Uint8Array): Promise<KeyProperties> {
    const k = await this.call({ kind: 'keys', what: 'restore a key backup' }, () => this.keys.restoreKeyBackup(blob));
    return this.vaultKey(k).properties;
  }

  // ---- cryptography: one CryptographyClient per key id ----

  private cryptoFor(nameOrId: string): { client: CryptographyClient; name: string } {
    const r = resolveRef(this.uri, 'keys', nameOrId);
    const id = objectId(this.uri, 'keys', r.name, r.version);
    let client = this.conn.crypto.get(id);
    if (!client) {
      // On the KeyClient's pipeline: its token and challenge serve the key operations too (a client of its own
      // would answer the vault's 401 challenge again before its first call).
      client = this.keys.getCryptographyClient(r.name, r.version ? { keyVersion: r.version } : {});
      this.conn.crypto.set(id, client);
    }
    return { client, name: r.name };
  }

  private kidOf(keyID: string | undefined, fallback: string): string {
    if (!keyID) return fallback;
    const p = parseKeyVaultKeyIdentifier(keyID);
    return objectId(this.uri, 'keys', p.name, p.version);
  }

  private checkBytes(data: Uint8Array, what: string): void {
    if (!(data instanceof Uint8Array) || data.length === 0) throw new VaultError('VAULT_BAD_ARGUMENT', `${what} needs a non-empty byte array`);
  }

  async wrapKey(nameOrId: string, alg: WrapAlgorithm, plaintext: Uint8Array): Promise<WrapResult> {
    this.checkBytes(plaintext, 'wrapKey');
    const { client, name } = this.cryptoFor(nameOrId);
    const w = await this.call({ kind: 'keys', what: `wrapKey with key '${name}'` }, () => client.wrapKey(alg, plaintext), name);
    return { kid: this.kidOf(w.keyID, nameOrId), alg, result: w.result };
  }

  async unwrapKey(nameOrId: string, alg: WrapAlgorithm, wrapped: Uint8Array): Promise<WrapResult> {
    this.checkBytes(wrapped, 'unwrapKey');
    const { client, name } = this.cryptoFor(nameOrId);
    const w = await this.call({ kind: 'keys', what: `unwrapKey with key '${name}'`, unwrap: true }, () => client.unwrapKey(alg, wrapped), name);
    return { kid: this.kidOf(w.keyID, nameOrId), alg, result: w.result };
  }

  async encrypt(nameOrId: string, alg: EncryptAlgorithm, plaintext: Uint8Array): Promise<EncryptResult> {
    this.checkBytes(plaintext, 'encrypt');
    const { client, name } = this.cryptoFor(nameOrId);
    const w = await this.call({ kind: 'keys', what: `encrypt with key '${name}'` }, () => client.encrypt({ algorithm: alg, plaintext }), name);
    return { kid: this.kidOf(w.keyID, nameOrId), alg, result: w.result };
  }

  async decrypt(nameOrId: string, alg: EncryptAlgorithm, ciphertext: Uint8Array): Promise<EncryptResult> {
    this.checkBytes(ciphertext, 'decrypt');
    const { client, name } = this.cryptoFor(nameOrId);
    const w = await this.call({ kind: 'keys', what: `decrypt with key '${name}'`, unwrap: true }, () => client.decrypt({ algorithm: alg, ciphertext }), name);
    return { kid: this.kidOf(w.keyID, nameOrId), alg, result: w.result };
  }

  // ---- management-plane operations ----

  addPrincipal(_name: string): Promise<{ name: string; token: string }> {
    return unsupported('vault principal add', 'create a service principal: az ad sp create-for-rbac');
  }

  removePrincipal(_name: string): Promise<void> {
    return unsupported('vault principal remove', 'az ad sp delete');
  }

  listPrincipals(): Promise<PrincipalInfo[]> {
    return unsupported('vault principal list', 'az role assignment list --scope <vault resource id>');
  }

  setAccessPolicy(_principal: string, _policy: Partial<AccessPolicy>): Promise<PrincipalInfo> {
    return unsupported('vault policy set', 'az keyvault set-policy or az role assignment create');
  }

  deleteAccessPolicy(_principal: string): Promise<PrincipalInfo> {
    return unsupported('vault policy delete', 'az keyvault delete-policy or az role assignment delete');
  }

  // Key Vault logs every data-plane call itself (diagnostic settings, AuditEvent); nothing to add from here.
  async recordAuditEvent(_operation: string, _objectId: string, _result: string): Promise<void> {}

  readAudit(_options?: { sinceSeq?: number; limit?: number }): Promise<AuditEntry[]> {
    return unsupported('vault audit', "Key Vault's AuditEvent logs through diagnostic settings (az monitor diagnostic-settings create)");
  }
}
