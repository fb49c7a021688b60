/**
 * The embedded local vault: the Vault interface over one SQLite database plus a
 * master key (see master-key.ts), everything sealed at rest (record-cipher.ts).
 *
 * Credentials: a handle opened without a token acts as the principal 'owner',
 * which holds every permission and alone manages properties, principals,
 * policies and the audit log. Whoever can open the embedded vault holds its
 * master key (key file or passphrase) and could read the database directly, so
 * the owner is simply "the local user who holds the master key"; the access
 * policies bind the other principals, which present bearer tokens
 * `<principal>.<secret>` (only SHA-256 of the secret is stored, compared in
 * constant time). They become a real boundary once a vault server holds the
 * master key on the callers' behalf.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { VaultError, type VaultErrorCode } from '../errors.js';
import { generateKeyMaterial, importJwk, publicJwk, unwrapWith, wrapWith, type KeyMaterial } from '../key-material.js';
import { assertContentType, assertName, assertSecretValue, checkDate, checkRetention, checkTags } from '../limits.js';
import { objectId, resolveRef, type ObjectKind } from '../object-id.js';
import {
  ENCRYPT_ALGORITHMS, KEY_PERMISSIONS, SECRET_PERMISSIONS,
  type AccessPolicy, type AttributesUpdate, type AuditEntry, type CreateKeyOptions, type DeletedObject, type ImportKeyOptions,
  type JsonWebKey, type KeyPermission, type KeyProperties, type PrincipalInfo, type Secret, type SecretPermission, type SecretProperties,
  type NewPrincipal, type SecretUpdate, type SetSecretOptions, type Vault, type VaultKey, type VaultProperties, type VaultPropertiesUpdate,
  type EncryptAlgorithm, type EncryptResult, type WrapAlgorithm, type WrapResult, WRAP_ALGORITHMS,
} from '../types.js';
import { AuditQueue, appendAudit, readAudit, type AuditEvent } from './audit-log.js';
import { decodeBackup, encodeBackup } from './backup-blob.js';
import type { RecordCipher } from './record-cipher.js';
import {
  fromJson, newAttrs, toAttributes, toJson, updateAttrs,
  type KeyRecord, type ObjectState, type PrincipalRecord, type PropertiesRecord, type SecretRecord,
} from './records.js';
import type { VaultStore, VersionRow } from './store.js';
import { OWNER } from './defaults.js';

const RECORD_CACHE_MAX = 4096;
/** Operations that change nothing in the vault (their audit entries may skip the fsync on a server; see #audit). */
const READ_ONLY_OPERATIONS = new Set([
  'getProperties', 'getSecret', 'listSecrets', 'listSecretVersions', 'listDeletedSecrets', 'backupSecret',
  'getKey', 'listKeys', 'listKeyVersions', 'listDeletedKeys', 'backupKey', 'wrapKey', 'unwrapKey', 'encrypt', 'decrypt',
  'getRandomBytes',
]);

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
const DAY_MS = 86_400_000;
/** The meta entry of the purge schedule (purgeExpiredDeleted). */
const PURGE_DUE_META = 'purge_due';

type Access = { kind: 'secrets'; perm: SecretPermission } | { kind: 'keys'; perm: KeyPermission } | 'owner' | 'any';

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * What a vault server's access token carries instead of the secret: a digest of the stored secret hash, so a
 * token stops working when its principal is removed or re-added with new credentials.
 */
function credentialTagOf(tokenHash: string): Buffer {
  return createHash('sha256').update(`vhdcrypt-credential|${tokenHash}`, 'utf8').digest().subarray(0, 16);
}

/** A UUID (8-4-4-4-12) from 32 hex digits. */
function uuidOf(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

function checkPolicy(p: Partial<AccessPolicy>): void {
  for (const perm of p.secrets ?? []) {
    if (!(SECRET_PERMISSIONS as readonly string[]).includes(perm)) throw new VaultError('VAULT_BAD_ARGUMENT', `unknown secret permission '${perm}'; one of ${SECRET_PERMISSIONS.join(', ')}`);
  }
  for (const perm of p.keys ?? []) {
    if (!(KEY_PERMISSIONS as readonly string[]).includes(perm)) throw new VaultError('VAULT_BAD_ARGUMENT', `unknown key permission '${perm}'; one of ${KEY_PERMISSIONS.join(', ')}`);
  }
}

export class LocalVault implements Vault {
  readonly uri: string;
  #principal = OWNER;
  #tokenHash: Buffer | null = null;
  /** A server-issued token's credential tag (see credentialTagOf), in place of #tokenHash. */
  #credentialTag: Buffer | null = null;
  /** The caller's network address (a handle made by actingAs), recorded in its audit entries. */
  #client: string | undefined;
  /** A handle made by actingAs shares its parent's store and key: closing it leaves them open. */
  #shared = false;
  /** Group commit of audit entries for handles made by actingAs (see AuditQueue). */
  #auditQueue: AuditQueue | null = null;
  /** Opened records by sealed bytes (see #openRecord); shared with handles made by actingAs. */
  #records = new Map<string, unknown>();
  readonly #store: VaultStore;
  readonly #cipher: RecordCipher;
  #closed = false;

  constructor(store: VaultStore, cipher: RecordCipher, uri: string) {
    this.#store = store;
    this.#cipher = cipher;
    this.uri = uri;
  }

  get principal(): string {
    return this.#principal;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#shared) return;
    this.#auditQueue?.flush();
    this.#cipher.wipe();
    this.#store.close();
  }

  /** The tenant id a vault server announces by default: the vault's id as a UUID. */
  get tenantId(): string {
    return uuidOf(String(this.#store.getMeta('vault_id')));
  }

  /**
   * A vault server's token endpoint: the principal whose client credentials these are, and the tag its access
   * token carries; null when they are not valid (unknown client id, wrong secret, the owner). Constant time in the secret.
   */
  verifyClientCredentials(clientId: string, clientSecret: string): { principal: string; credentialTag: string } | null {
    if (this.#closed) throw new VaultError('VAULT_CLOSED', 'the vault handle is closed');
    const dot = clientSecret.indexOf('.');
    const name = clientSecret.slice(0, Math.max(dot, 0));
    if (dot <= 0 || !/^[0-9A-Za-z-]{1,127}$/.test(name) || name.toLowerCase() === OWNER) return null;
    const rec = this.#principalRecord(name);
    const hash = sha256(clientSecret.slice(dot + 1));
    const stored = rec ? Buffer.from(rec.tokenHash, 'base64') : Buffer.alloc(32);
    const secretOk = timingSafeEqual(stored, hash);
    if (!rec || !secretOk || rec.clientId === undefined || rec.clientId !== clientId.toLowerCase()) return null;
    return { principal: rec.name, credentialTag: credentialTagOf(rec.tokenHash).toString('base64url') };
  }

  /**
   * A handle on the same store and key acting as `principal`, authorized by a server-issued token's credential
   * tag (re-checked on every call, so removing the principal or replacing its credentials takes effect at once),
   * its audit entries carrying `client` and committed in groups. Closing it leaves this handle open.
   */
  actingAs(principal: string, credentialTag: string, client: string): LocalVault {
    if (this.#closed) throw new VaultError('VAULT_CLOSED', 'the vault handle is closed');
    const v = new LocalVault(this.#store, this.#cipher, this.uri);
    v.#principal = principal;
    v.#credentialTag = Buffer.from(credentialTag, 'base64url');
    v.#client = client;
    v.#shared = true;
    this.#auditQueue ??= new AuditQueue(this.#store, this.#cipher);
    v.#auditQueue = this.#auditQueue;
    v.#records = this.#records;
    return v;
  }

  /** Append to the audit log a server event that is not a vault call (a token issued or refused). */
  auditServerEvent(e: AuditEvent): Promise<void> {
    this.#auditQueue ??= new AuditQueue(this.#store, this.#cipher);
    return this.#auditQueue.push({ durable: false, ...e });
  }

  // ---- authentication, authorization, audit ----

  /** Bind this handle to the token's principal (no token: the owner). */
  authenticate(token: string | undefined): void {
    if (token === undefined || token === '') return;
    const dot = token.indexOf('.');
    // Only a well-formed principal name reaches the audit log; anything else is recorded as '?'.
    const name = dot > 0 && /^[0-9A-Za-z-]{1,127}$/.test(token.slice(0, dot)) ? token.slice(0, dot) : '';
    const fail = (): never => {
      this.#audit(name || '?', 'authenticate', this.uri, 'VAULT_UNAUTHENTICATED');
      throw new VaultError('VAULT_UNAUTHENTICATED', 'the bearer token is not valid for this vault');
    };
    if (!name || name === OWNER) return fail();
    const rec = this.#principalRecord(name);
    const hash = sha256(token.slice(dot + 1));
    if (!rec || !timingSafeEqual(Buffer.from(rec.tokenHash, 'base64'), hash)) return fail();
    this.#principal = rec.name;
    this.#tokenHash = hash;
  }

  #principalRecord(name: string): PrincipalRecord | undefined {
    const row = this.#store.getPrincipal(name);
    if (!row) return undefined;
    return this.#openRecord<PrincipalRecord>(row.record, `principals|${name.toLowerCase()}`, `principal '${name}'`);
  }

  /**
   * A sealed record (never key material or a secret value) opened and parsed, remembered by its exact sealed
   * bytes: a vault server re-reads the caller's principal, the object and its version on every request, and a
   * changed row has new bytes (a fresh nonce), so it is opened again. The parsed record is frozen: callers copy.
   */
  #openRecord<T>(blob: Buffer, aad: string, what: string): T {
    const key = `${aad}|${blob.toString('base64')}`;
    const hit = this.#records.get(key);
    if (hit !== undefined) return hit as T;
    const parsed = deepFreeze(fromJson<T>(this.#cipher.open(blob, aad, what)));
    if (this.#records.size >= RECORD_CACHE_MAX) this.#records.clear();
    this.#records.set(key, parsed);
    return parsed;
  }

  #authorize(access: Access, operation: string): void {
    if (this.#closed) throw new VaultError('VAULT_CLOSED', 'the vault handle is closed');
    if (this.#principal === OWNER) return;
    if (access === 'owner') throw new VaultError('VAULT_FORBIDDEN', `only the vault owner may ${operation}`);
    // Re-read the principal each call: a removed principal or a changed policy takes effect at once, across processes.
    const rec = this.#principalRecord(this.#principal);
    const current = rec === undefined ? false
      : this.#credentialTag !== null ? timingSafeEqual(credentialTagOf(rec.tokenHash), this.#credentialTag)
        : this.#tokenHash !== null && timingSafeEqual(Buffer.from(rec.tokenHash, 'base64'), this.#tokenHash);
    if (!rec || !current) {
      throw new VaultError('VAULT_UNAUTHENTICATED', `principal '${this.#principal}' no longer exists or its token was replaced`);
    }
    if (access === 'any') return;
    const granted = (rec.policy[access.kind] as readonly string[]).includes(access.perm);
    if (!granted) {
      throw new VaultError('VAULT_FORBIDDEN', `principal '${this.#principal}' lacks the ${access.kind}/${access.perm} permission (${operation})`);
    }
  }

  #audit(principal: string, operation: string, id: string, result: string): void | Promise<void> {
    const e: AuditEvent = { principal, operation, objectId: id, result, ...(this.#client !== undefined ? { client: this.#client } : {}) };
    if (this.#auditQueue !== null && this.#shared) {
      // A call that changed the vault is recorded with an fsync before its reply; a read or a refusal may share a
      // commit without one (see AuditEvent.durable): a crash of the process loses neither.
      return this.#auditQueue.push({ ...e, durable: result === 'ok' && !READ_ONLY_OPERATIONS.has(operation) });
    }
    appendAudit(this.#store, this.#cipher, e);
  }

  /** Authorize, run, audit (success or the failure's code). `target.id` may be refined by `fn`. */
  async #call<T>(operation: string, access: Access, target: { id: string }, fn: () => T | Promise<T>): Promise<T> {
    let result = 'ok';
    try {
      this.#authorize(access, operation);
      return await fn();
    } catch (e) {
      const code = (e as { code?: unknown } | null)?.code;
      result = typeof code === 'string' && code !== '' ? code : 'ERROR';
      throw e;
    } finally {
      // A reply is never given for a call the log does not hold: a server's handle waits for its group commit.
      if (!this.#closed) await this.#audit(this.#principal, operation, target.id, result);
    }
  }

  // ---- sealed row helpers ----

  #state(kind: ObjectKind, name: string): ObjectState | undefined {
    const row = this.#store.getObject(kind, name);
    if (!row) return undefined;
    return this.#openRecord<ObjectState>(row.state, `objects|${kind}|${name.toLowerCase()}`, `${kind}/${name} state`);
  }

  #putState(kind: ObjectKind, s: ObjectState): void {
    this.#store.putObject(kind, s.name, this.#cipher.seal(toJson(s), `objects|${kind}|${s.name.toLowerCase()}`));
  }

  #record<T>(kind: ObjectKind, row: VersionRow): T {
    return this.#openRecord<T>(row.record, `versions|${kind}|${row.name.toLowerCase()}|${row.version}|record`, `${kind}/${row.name}/${row.version}`);
  }

  #sealRecord(kind: ObjectKind, name: string, version: string, rec: unknown): Buffer {
    return this.#cipher.seal(toJson(rec), `versions|${kind}|${name.toLowerCase()}|${version}|record`);
  }

  #material(kind: ObjectKind, name: string, version: string): Buffer {
    const blob = this.#store.getMaterial(kind, name, version);
    if (!blob) throw new VaultError('VAULT_TAMPERED', `${kind}/${name}/${version} has no stored value`);
    return this.#cipher.open(blob, `versions|${kind}|${name.toLowerCase()}|${version}|material`, `${kind}/${name}/${version} value`);
  }

  #insert(kind: ObjectKind, name: string, version: string, rec: unknown, material: Uint8Array): void {
    const sealedMaterial = this.#cipher.seal(material, `versions|${kind}|${name.toLowerCase()}|${version}|material`);
    this.#store.insertVersion(kind, name, version, this.#sealRecord(kind, name, version, rec), sealedMaterial);
  }

  /** The live (not deleted) object, or the kind's NOT_FOUND / VAULT_DELETED. */
  #live(kind: ObjectKind, name: string): ObjectState {
    const s = this.#state(kind, name);
    if (!s) throw notFound(kind, name);
    if (s.deletedOn !== null) throw new VaultError('VAULT_DELETED', `${singular(kind)} '${s.name}' is deleted; recover it first`);
    return s;
  }

  #row(kind: ObjectKind, s: ObjectState, version: string | undefined): VersionRow {
    const row = this.#store.getVersion(kind, s.name, version);
    if (!row) throw notFound(kind, s.name, version);
    return row;
  }

  /** New object or new version of a live one; refuses a deleted name (recover or purge it first). */
  #stateForWrite(kind: ObjectKind, name: string): ObjectState {
    const s = this.#state(kind, name);
    if (s && s.deletedOn !== null) {
      throw new VaultError('VAULT_DELETED', `${singular(kind)} '${s.name}' is deleted but recoverable; recover or purge it first`);
    }
    if (s) return s;
    const fresh: ObjectState = { name, deletedOn: null, scheduledPurge: null };
    this.#putState(kind, fresh);
    return fresh;
  }

  #props(): PropertiesRecord {
    const blob = this.#store.getMeta('properties');
    if (!Buffer.isBuffer(blob)) throw new VaultError('VAULT_TAMPERED', 'the vault properties are missing');
    return this.#openRecord<PropertiesRecord>(blob, 'meta|properties', 'vault properties');
  }

  /**
   * The sealed 'purge_due' entry: no soft-deleted object is due for purging before this time (ms; null: none is
   * deleted). A lower bound, lowered by every soft delete and set exactly by each scan; absent (a vault from before
   * it, or unreadable): unknown, so the next open scans.
   */
  #purgeDue(): number | null | undefined {
    const blob = this.#store.getMeta(PURGE_DUE_META);
    if (!Buffer.isBuffer(blob)) return undefined;
    const v = this.#openRecord<{ due: number | null }>(blob, `meta|${PURGE_DUE_META}`, 'vault purge schedule').due;
    return v === null || Number.isFinite(v) ? v : undefined;
  }

  #setPurgeDue(due: number | null): void {
    this.#store.setMeta(PURGE_DUE_META, this.#cipher.seal(toJson({ due }), `meta|${PURGE_DUE_META}`));
  }

  /**
   * Purge objects whose soft-delete retention has ended (as Key Vault does). Every open calls it: the sealed
   * purge_due bound makes that one read until something is due, instead of opening every object's state under the
   * write lock (which other processes then wait for) on each open.
   */
  purgeExpiredDeleted(): void {
    const now = Date.now();
    const due = this.#purgeDue();
    if (due === null || (due !== undefined && now < due)) return;
    const expired = this.#store.tx(() => {
      const gone: Array<[ObjectKind, string]> = [];
      let next: number | null = null;
      for (const kind of ['secrets', 'keys'] as const) {
        for (const row of this.#store.listObjects(kind)) {
          const s = this.#state(kind, row.name);
          if (!s || s.deletedOn === null || s.scheduledPurge === null) continue;
          if (s.scheduledPurge <= now) {
            this.#store.removeObject(kind, s.name);
            gone.push([kind, s.name]);
          } else if (next === null || s.scheduledPurge < next) {
            next = s.scheduledPurge;
          }
        }
      }
      this.#setPurgeDue(next);
      return gone;
    });
    for (const [kind, name] of expired) this.#audit('system', 'purgeAfterRetention', objectId(this.uri, kind, name), 'ok');
  }

  // ---- vault properties ----

  /** The vault properties without an audit entry or a permission check: what a vault server puts in every reply (recoveryLevel). */
  currentProperties(): VaultProperties {
    if (this.#closed) throw new VaultError('VAULT_CLOSED', 'the vault handle is closed');
    return this.#publicProps(this.#props());
  }

  async getProperties(): Promise<VaultProperties> {
    return this.#call('getProperties', 'any', { id: this.uri }, () => this.#publicProps(this.#props()));
  }

  #publicProps(p: PropertiesRecord): VaultProperties {
    return {
      uri: this.uri,
      enabledForDiskEncryption: p.enabledForDiskEncryption,
      softDeleteRetentionDays: p.softDeleteRetentionDays,
      purgeProtection: p.purgeProtection,
      created: new Date(p.created),
    };
  }

  async setProperties(u: VaultPropertiesUpdate): Promise<VaultProperties> {
    return this.#call('setProperties', 'owner', { id: this.uri }, () => this.#store.tx(() => {
      const p = this.#props();
      if (p.purgeProtection && u.purgeProtection === false) throw new VaultError('VAULT_BAD_ARGUMENT', 'purge protection cannot be turned off once on');
      const next: PropertiesRecord = {
        enabledForDiskEncryption: u.enabledForDiskEncryption ?? p.enabledForDiskEncryption,
        softDeleteRetentionDays: u.softDeleteRetentionDays === undefined ? p.softDeleteRetentionDays : checkRetention(u.softDeleteRetentionDays),
        purgeProtection: u.purgeProtection ?? p.purgeProtection,
        created: p.created,
      };
      this.#store.setMeta('properties', this.#cipher.seal(toJson(next), 'meta|properties'));
      return this.#publicProps(next);
    }));
  }

  // ---- secrets ----

  #secretProps(name: string, version: string, r: SecretRecord): SecretProperties {
    return { id: objectId(this.uri, 'secrets', name, version), name, version, contentType: r.contentType, tags: { ...r.tags }, ...toAttributes(r.attrs) };
  }

  async setSecret(name: string, value: string, o: SetSecretOptions = {}): Promise<SecretProperties> {
    const target = { id: objectId(this.uri, 'secrets', String(name)) };
    return this.#call('setSecret', { kind: 'secrets', perm: 'set' }, target, () => {
      assertName(name, 'secret');
      assertSecretValue(value);
      assertContentType(o.contentType);
      const tags = checkTags(o.tags);
      checkDate(o.notBefore, 'notBefore');
      checkDate(o.expiresOn, 'expiresOn');
      const bytes = Buffer.from(value, 'utf8');
      try {
        return this.#store.tx(() => {
          const s = this.#stateForWrite('secrets', name);
          const version = randomBytes(16).toString('hex');
          const rec: SecretRecord = { attrs: newAttrs(o, Date.now()), contentType: o.contentType ?? null, tags };
          this.#insert('secrets', s.name, version, rec, bytes);
          target.id = objectId(this.uri, 'secrets', s.name, version);
          return this.#secretProps(s.name, version, rec);
        });
      } finally {
        bytes.fill(0);
      }
    });
  }

  async getSecret(nameOrId: string, version?: string): Promise<Secret> {
    const target = { id: String(nameOrId) };
    return this.#call('getSecret', { kind: 'secrets', perm: 'get' }, target, () => {
      const ref = resolveRef(this.uri, 'secrets', nameOrId, version);
      const s = this.#live('secrets', ref.name);
      const row = this.#row('secrets', s, ref.version);
      target.id = objectId(this.uri, 'secrets', s.name, row.version);
      const rec = this.#record<SecretRecord>('secrets', row);
      const now = Date.now();
      const what = `secret ${s.name}/${row.version}`;
      if (!rec.attrs.enabled) throw new VaultError('VAULT_SECRET_DISABLED', `${what} is disabled`);
      if (rec.attrs.nbf !== null && now < rec.attrs.nbf) throw new VaultError('VAULT_SECRET_NOT_YET_VALID', `${what} is not valid before ${new Date(rec.attrs.nbf).toISOString()}`);
      if (rec.attrs.exp !== null && now >= rec.attrs.exp) throw new VaultError('VAULT_SECRET_EXPIRED', `${what} expired at ${new Date(rec.attrs.exp).toISOString()}`);
      const bytes = this.#material('secrets', s.name, row.version);
      const value = bytes.toString('utf8');
      bytes.fill(0);
      return { value, properties: this.#secretProps(s.name, row.version, rec) };
    });
  }

  async listSecrets(): Promise<SecretProperties[]> {
    return this.#call('listSecrets', { kind: 'secrets', perm: 'list' }, { id: `${this.uri}/secrets` }, () => this.#listLatest('secrets', false)
      .map(({ s, row }) => this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row))));
  }

  #listLatest(kind: ObjectKind, deleted: boolean): Array<{ s: ObjectState; row: VersionRow }> {
    const out: Array<{ s: ObjectState; row: VersionRow }> = [];
    for (const o of this.#store.listObjects(kind)) {
      const s = this.#state(kind, o.name);
      if (!s || (s.deletedOn !== null) !== deleted) continue;
      const row = this.#store.getVersion(kind, s.name);
      if (row) out.push({ s, row });
    }
    return out;
  }

  async listSecretVersions(name: string): Promise<SecretProperties[]> {
    return this.#call('listSecretVersions', { kind: 'secrets', perm: 'list' }, { id: objectId(this.uri, 'secrets', String(name)) }, () => {
      assertName(name, 'secret');
      const s = this.#live('secrets', name);
      return this.#store.listVersions('secrets', s.name).map((row) => this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row)));
    });
  }

  async updateSecretProperties(nameOrId: string, version: string | undefined, u: SecretUpdate): Promise<SecretProperties> {
    const target = { id: String(nameOrId) };
    return this.#call('updateSecretProperties', { kind: 'secrets', perm: 'set' }, target, () => {
      const ref = resolveRef(this.uri, 'secrets', nameOrId, version);
      if (u.contentType !== undefined) assertContentType(u.contentType);
      const tags = u.tags === undefined ? undefined : checkTags(u.tags);
      checkDate(u.notBefore, 'notBefore');
      checkDate(u.expiresOn, 'expiresOn');
      return this.#store.tx(() => {
        const s = this.#live('secrets', ref.name);
        const row = this.#row('secrets', s, ref.version);
        target.id = objectId(this.uri, 'secrets', s.name, row.version);
        const old = this.#record<SecretRecord>('secrets', row);
        const rec: SecretRecord = {
          attrs: updateAttrs(old.attrs, u, Date.now()),
          contentType: u.contentType === undefined ? old.contentType : u.contentType,
          tags: tags ?? old.tags,
        };
        this.#store.setVersionRecord('secrets', s.name, row.version, this.#sealRecord('secrets', s.name, row.version, rec));
        return this.#secretProps(s.name, row.version, rec);
      });
    });
  }

  async deleteSecret(name: string): Promise<DeletedObject & { properties: SecretProperties }> {
    return this.#softDelete('secrets', name, { kind: 'secrets', perm: 'delete' }, (s, row) => this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row)));
  }

  async listDeletedSecrets(): Promise<Array<DeletedObject & { properties: SecretProperties }>> {
    return this.#call('listDeletedSecrets', { kind: 'secrets', perm: 'list' }, { id: `${this.uri}/secrets` }, () => this.#listLatest('secrets', true)
      .map(({ s, row }) => ({ ...this.#deleted('secrets', s), properties: this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row)) })));
  }

  async recoverDeletedSecret(name: string): Promise<SecretProperties> {
    return this.#recover('secrets', name, { kind: 'secrets', perm: 'recover' }, (s, row) => this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row)));
  }

  async purgeDeletedSecret(name: string): Promise<void> {
    return this.#purge('secrets', name, { kind: 'secrets', perm: 'purge' });
  }

  async backupSecret(name: string): Promise<Uint8Array> {
    return this.#backup('secrets', name, { kind: 'secrets', perm: 'backup' });
  }

  async restoreSecretBackup(blob: Uint8Array): Promise<SecretProperties> {
    return this.#restore('secrets', blob, { kind: 'secrets', perm: 'restore' }, (s, row) => this.#secretProps(s.name, row.version, this.#record<SecretRecord>('secrets', row)));
  }

  // ---- shared soft-delete / backup machinery ----

  #deleted(kind: ObjectKind, s: ObjectState): DeletedObject {
    return { id: objectId(this.uri, kind, s.name), name: s.name, deletedOn: new Date(s.deletedOn ?? 0), scheduledPurgeDate: new Date(s.scheduledPurge ?? 0) };
  }

  async #softDelete<T>(kind: ObjectKind, name: string, access: Access, view: (s: ObjectState, row: VersionRow) => T): Promise<DeletedObject & { properties: T }> {
    const target = { id: objectId(this.uri, kind, String(name)) };
    return this.#call(kind === 'secrets' ? 'deleteSecret' : 'deleteKey', access, target, () => {
      assertName(name, singular(kind));
      return this.#store.tx(() => {
        const s = this.#live(kind, name);
        const now = Date.now();
        const next: ObjectState = { name: s.name, deletedOn: now, scheduledPurge: now + this.#props().softDeleteRetentionDays * DAY_MS };
        this.#putState(kind, next);
        // Keep purge_due a lower bound (unknown stays unknown: the next open scans).
        const due = this.#purgeDue();
        if (due !== undefined) this.#setPurgeDue(due === null ? next.scheduledPurge : Math.min(due, next.scheduledPurge!));
        return { ...this.#deleted(kind, next), properties: view(next, this.#row(kind, next, undefined)) };
      });
    });
  }

  async #recover<T>(kind: ObjectKind, name: string, access: Access, view: (s: ObjectState, row: VersionRow) => T): Promise<T> {
    return this.#call(kind === 'secrets' ? 'recoverDeletedSecret' : 'recoverDeletedKey', access, { id: objectId(this.uri, kind, String(name)) }, () => {
      assertName(name, singular(kind));
      return this.#store.tx(() => {
        const s = this.#state(kind, name);
        if (!s) throw notFound(kind, name);
        if (s.deletedOn === null) throw new VaultError('VAULT_NOT_DELETED', `${singular(kind)} '${s.name}' is not deleted`);
        const next: ObjectState = { name: s.name, deletedOn: null, scheduledPurge: null };
        this.#putState(kind, next);
        return view(next, this.#row(kind, next, undefined));
      });
    });
  }

  async #purge(kind: ObjectKind, name: string, access: Access): Promise<void> {
    return this.#call(kind === 'secrets' ? 'purgeDeletedSecret' : 'purgeDeletedKey', access, { id: objectId(this.uri, kind, String(name)) }, () => {
      assertName(name, singular(kind));
      this.#store.tx(() => {
        const s = this.#state(kind, name);
        if (!s) throw notFound(kind, name);
        if (s.deletedOn === null) throw new VaultError('VAULT_NOT_DELETED', `${singular(kind)} '${s.name}' is not deleted; delete it before purging`);
        if (this.#props().purgeProtection && s.scheduledPurge !== null && Date.now() < s.scheduledPurge) {
          throw new VaultError('VAULT_PURGE_PROTECTED', `purge protection keeps '${s.name}' until ${new Date(s.scheduledPurge).toISOString()}`);
        }
        this.#store.removeObject(kind, s.name);
      });
    });
  }

  async #backup(kind: ObjectKind, name: string, access: Access): Promise<Uint8Array> {
    return this.#call(kind === 'secrets' ? 'backupSecret' : 'backupKey', access, { id: objectId(this.uri, kind, String(name)) }, () => {
      assertName(name, singular(kind));
      const versions = this.#store.db.transaction(() => {
        const s = this.#live(kind, name);
        return this.#store.listVersions(kind, s.name).map((row) => ({
          version: row.version,
          record: this.#record<unknown>(kind, row),
          material: this.#material(kind, s.name, row.version),
        }));
      })();
      const realName = this.#live(kind, name).name;
      try {
        return encodeBackup(this.#cipher, kind, { name: realName, versions });
      } finally {
        for (const v of versions) v.material.fill(0);
      }
    });
  }

  async #restore<T>(kind: ObjectKind, blob: Uint8Array, access: Access, view: (s: ObjectState, row: VersionRow) => T): Promise<T> {
    const target = { id: `${this.uri}/${kind}` };
    return this.#call(kind === 'secrets' ? 'restoreSecretBackup' : 'restoreKeyBackup', access, target, () => {
      const content = decodeBackup(this.#cipher, kind, blob);
      try {
        assertName(content.name, singular(kind));
        return this.#store.tx(() => {
          if (this.#state(kind, content.name)) {
            throw new VaultError('VAULT_CONFLICT', `${singular(kind)} '${content.name}' already exists (perhaps deleted); purge it before restoring`);
          }
          const s: ObjectState = { name: content.name, deletedOn: null, scheduledPurge: null };
          this.#putState(kind, s);
          for (const v of content.versions) this.#insert(kind, s.name, v.version, v.record, v.material);
          const row = this.#row(kind, s, undefined);
          target.id = objectId(this.uri, kind, s.name, row.version);
          return view(s, row);
        });
      } finally {
        for (const v of content.versions) v.material.fill(0);
      }
    });
  }

  // ---- keys ----

  #keyProps(name: string, version: string, r: KeyRecord): KeyProperties {
    return { id: objectId(this.uri, 'keys', name, version), name, version, kty: r.kty, keySize: r.size, tags: { ...r.tags }, ...toAttributes(r.attrs) };
  }

  #vaultKey(name: string, version: string, r: KeyRecord): VaultKey {
    const id = objectId(this.uri, 'keys', name, version);
    const material = this.#material('keys', name, version);
    try {
      return { key: publicJwk(id, r.kty, material), properties: this.#keyProps(name, version, r) };
    } finally {
      material.fill(0);
    }
  }

  async #addKeyVersion(name: string, km: KeyMaterial, o: ImportKeyOptions, target: { id: string }, onlyIfAbsent = false): Promise<VaultKey> {
    try {
      return this.#store.tx(() => {
        const existing = onlyIfAbsent ? this.#state('keys', name) : undefined;
        if (existing && existing.deletedOn === null) {
          const row = this.#row('keys', existing, undefined);
          target.id = objectId(this.uri, 'keys', existing.name, row.version);
          return this.#vaultKey(existing.name, row.version, this.#record<KeyRecord>('keys', row));
        }
        const s = this.#stateForWrite('keys', name);
        const version = randomBytes(16).toString('hex');
        const rec: KeyRecord = { attrs: newAttrs(o, Date.now()), kty: km.kty, size: km.size, tags: checkTags(o.tags) };
        this.#insert('keys', s.name, version, rec, km.material);
        target.id = objectId(this.uri, 'keys', s.name, version);
        return this.#vaultKey(s.name, version, rec);
      });
    } finally {
      km.material.fill(0);
    }
  }

  #checkKeyOptions(name: string, o: ImportKeyOptions): void {
    assertName(name, 'key');
    checkTags(o.tags);
    checkDate(o.notBefore, 'notBefore');
    checkDate(o.expiresOn, 'expiresOn');
  }

  async createKey(name: string, o: CreateKeyOptions): Promise<VaultKey> {
    const target = { id: objectId(this.uri, 'keys', String(name)) };
    return this.#call('createKey', { kind: 'keys', perm: 'create' }, target, async () => {
      this.#checkKeyOptions(name, o);
      this.#store.db.transaction(() => this.#stateCheckWritable('keys', name))();
      return this.#addKeyVersion(name, await generateKeyMaterial(o.kty, o.size), o, target, o.onlyIfAbsent === true);
    });
  }

  #stateCheckWritable(kind: ObjectKind, name: string): void {
    const s = this.#state(kind, name);
    if (s && s.deletedOn !== null) throw new VaultError('VAULT_DELETED', `${singular(kind)} '${s.name}' is deleted but recoverable; recover or purge it first`);
  }

  async importKey(name: string, jwk: JsonWebKey, o: ImportKeyOptions = {}): Promise<VaultKey> {
    const target = { id: objectId(this.uri, 'keys', String(name)) };
    return this.#call('importKey', { kind: 'keys', perm: 'import' }, target, () => {
      this.#checkKeyOptions(name, o);
      return this.#addKeyVersion(name, importJwk(jwk), o, target);
    });
  }

  async getKey(nameOrId: string, version?: string): Promise<VaultKey> {
    const target = { id: String(nameOrId) };
    return this.#call('getKey', { kind: 'keys', perm: 'get' }, target, () => {
      const ref = resolveRef(this.uri, 'keys', nameOrId, version);
      const s = this.#live('keys', ref.name);
      const row = this.#row('keys', s, ref.version);
      target.id = objectId(this.uri, 'keys', s.name, row.version);
      return this.#vaultKey(s.name, row.version, this.#record<KeyRecord>('keys', row));
    });
  }

  async listKeys(): Promise<KeyProperties[]> {
    return this.#call('listKeys', { kind: 'keys', perm: 'list' }, { id: `${this.uri}/keys` }, () => this.#listLatest('keys', false)
      .map(({ s, row }) => this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row))));
  }

  async listKeyVersions(name: string): Promise<KeyProperties[]> {
    return this.#call('listKeyVersions', { kind: 'keys', perm: 'list' }, { id: objectId(this.uri, 'keys', String(name)) }, () => {
      assertName(name, 'key');
      const s = this.#live('keys', name);
      return this.#store.listVersions('keys', s.name).map((row) => this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row)));
    });
  }

  async updateKeyProperties(nameOrId: string, version: string | undefined, u: AttributesUpdate): Promise<KeyProperties> {
    const target = { id: String(nameOrId) };
    return this.#call('updateKeyProperties', { kind: 'keys', perm: 'update' }, target, () => {
      const ref = resolveRef(this.uri, 'keys', nameOrId, version);
      const tags = u.tags === undefined ? undefined : checkTags(u.tags);
      checkDate(u.notBefore, 'notBefore');
      checkDate(u.expiresOn, 'expiresOn');
      return this.#store.tx(() => {
        const s = this.#live('keys', ref.name);
        const row = this.#row('keys', s, ref.version);
        target.id = objectId(this.uri, 'keys', s.name, row.version);
        const old = this.#record<KeyRecord>('keys', row);
        const rec: KeyRecord = { ...old, attrs: updateAttrs(old.attrs, u, Date.now()), tags: tags ?? old.tags };
        this.#store.setVersionRecord('keys', s.name, row.version, this.#sealRecord('keys', s.name, row.version, rec));
        return this.#keyProps(s.name, row.version, rec);
      });
    });
  }

  async rotateKey(name: string): Promise<VaultKey> {
    const target = { id: objectId(this.uri, 'keys', String(name)) };
    return this.#call('rotateKey', { kind: 'keys', perm: 'create' }, target, async () => {
      assertName(name, 'key');
      const latest = this.#store.db.transaction(() => {
        const s = this.#live('keys', name);
        return this.#record<KeyRecord>('keys', this.#row('keys', s, undefined));
      })();
      const km = await generateKeyMaterial(latest.kty, latest.size);
      return this.#addKeyVersion(name, km, { tags: latest.tags }, target);
    });
  }

  async deleteKey(name: string): Promise<DeletedObject & { properties: KeyProperties }> {
    return this.#softDelete('keys', name, { kind: 'keys', perm: 'delete' }, (s, row) => this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row)));
  }

  async listDeletedKeys(): Promise<Array<DeletedObject & { properties: KeyProperties }>> {
    return this.#call('listDeletedKeys', { kind: 'keys', perm: 'list' }, { id: `${this.uri}/keys` }, () => this.#listLatest('keys', true)
      .map(({ s, row }) => ({ ...this.#deleted('keys', s), properties: this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row)) })));
  }

  async recoverDeletedKey(name: string): Promise<KeyProperties> {
    return this.#recover('keys', name, { kind: 'keys', perm: 'recover' }, (s, row) => this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row)));
  }

  async purgeDeletedKey(name: string): Promise<void> {
    return this.#purge('keys', name, { kind: 'keys', perm: 'purge' });
  }

  async backupKey(name: string): Promise<Uint8Array> {
    return this.#backup('keys', name, { kind: 'keys', perm: 'backup' });
  }

  async restoreKeyBackup(blob: Uint8Array): Promise<KeyProperties> {
    return this.#restore('keys', blob, { kind: 'keys', perm: 'restore' }, (s, row) => this.#keyProps(s.name, row.version, this.#record<KeyRecord>('keys', row)));
  }

  /** Load a key version for a crypto operation, applying the enabled (and, for wrap, date) rules. */
  #keyFor(nameOrId: string, alg: WrapAlgorithm, forWrap: boolean, target: { id: string }): KeyMaterial {
    if (!WRAP_ALGORITHMS.includes(alg)) throw new VaultError('VAULT_UNSUPPORTED_ALGORITHM', `unknown algorithm ${JSON.stringify(alg)}; one of ${WRAP_ALGORITHMS.join(', ')}`);
    const ref = resolveRef(this.uri, 'keys', nameOrId);
    return this.#store.db.transaction(() => {
      const s = this.#live('keys', ref.name);
      const row = this.#row('keys', s, ref.version);
      target.id = objectId(this.uri, 'keys', s.name, row.version);
      const rec = this.#record<KeyRecord>('keys', row);
      const what = `key ${s.name}/${row.version}`;
      // Dates protect new data only: unwrap ignores nbf/exp so a date never locks a disk out; disabling refuses both.
      if (!rec.attrs.enabled) throw new VaultError('VAULT_KEY_DISABLED', `${what} is disabled`);
      const now = Date.now();
      if (forWrap && rec.attrs.nbf !== null && now < rec.attrs.nbf) throw new VaultError('VAULT_KEY_NOT_YET_VALID', `${what} cannot wrap before ${new Date(rec.attrs.nbf).toISOString()}`);
      if (forWrap && rec.attrs.exp !== null && now >= rec.attrs.exp) throw new VaultError('VAULT_KEY_EXPIRED', `${what} cannot wrap after ${new Date(rec.attrs.exp).toISOString()}`);
      return { kty: rec.kty, size: rec.size, material: this.#material('keys', s.name, row.version) };
    })();
  }

  async wrapKey(nameOrId: string, alg: WrapAlgorithm, plaintext: Uint8Array): Promise<WrapResult> {
    return this.#crypt('wrapKey', nameOrId, alg, plaintext, true);
  }

  async unwrapKey(nameOrId: string, alg: WrapAlgorithm, wrapped: Uint8Array): Promise<WrapResult> {
    return this.#crypt('unwrapKey', nameOrId, alg, wrapped, false);
  }

  // Key Vault's encrypt/decrypt with RSA-OAEP are the same RSA operations as wrap/unwrap; only the permission,
  // the audited operation and the algorithms allowed (no A256KW: AES key wrap is not an encryption of data) differ.
  async encrypt(nameOrId: string, alg: EncryptAlgorithm, plaintext: Uint8Array): Promise<EncryptResult> {
    return this.#crypt('encrypt', nameOrId, alg, plaintext, true) as Promise<EncryptResult>;
  }

  async decrypt(nameOrId: string, alg: EncryptAlgorithm, ciphertext: Uint8Array): Promise<EncryptResult> {
    return this.#crypt('decrypt', nameOrId, alg, ciphertext, false) as Promise<EncryptResult>;
  }

  /** One path for the four key operations: `forward` (wrap, encrypt) applies the date rules and the public key. */
  #crypt(op: 'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt', nameOrId: string, alg: WrapAlgorithm, data: Uint8Array, forward: boolean): Promise<WrapResult> {
    // The key id enters the audit entry only once it names a key of this vault: a disk secret's document
    // supplies nameOrId, and a made-up one (a value a principal planted) must not be copied into the log.
    const target = { id: `${this.uri}/keys` };
    return this.#call(op, { kind: 'keys', perm: op }, target, () => {
      if (!(data instanceof Uint8Array)) throw new VaultError('VAULT_BAD_ARGUMENT', `${op} takes bytes`);
      if ((op === 'encrypt' || op === 'decrypt') && !(ENCRYPT_ALGORITHMS as readonly string[]).includes(alg)) {
        throw new VaultError('VAULT_UNSUPPORTED_ALGORITHM', `${op} takes ${ENCRYPT_ALGORITHMS.join(' or ')}, not ${JSON.stringify(alg)}`);
      }
      const k = this.#keyFor(nameOrId, alg, forward, target);
      try {
        if (forward) return { kid: target.id, alg, result: new Uint8Array(wrapWith(k, alg, data)) };
        const out = unwrapWith(k, alg, data);
        // A fresh copy the caller owns and wipes; the Buffer from node:crypto is wiped here.
        const result = new Uint8Array(out);
        out.fill(0);
        return { kid: target.id, alg, result };
      } finally {
        k.material.fill(0);
      }
    });
  }

  // ---- principals and access policies (owner only) ----

  #principalInfo(r: PrincipalRecord): PrincipalInfo {
    return { name: r.name, created: new Date(r.created), policy: { secrets: [...r.policy.secrets], keys: [...r.policy.keys] } };
  }

  #putPrincipalRecord(r: PrincipalRecord): void {
    this.#store.putPrincipal(r.name, this.#cipher.seal(toJson(r), `principals|${r.name.toLowerCase()}`));
  }

  async addPrincipal(name: string): Promise<NewPrincipal> {
    return this.#call('addPrincipal', 'owner', { id: `${this.uri}/principals/${String(name)}` }, () => {
      assertName(name, 'principal');
      if (name.toLowerCase() === OWNER) throw new VaultError('VAULT_CONFLICT', `'${OWNER}' is the vault owner and needs no token`);
      const secret = randomBytes(32).toString('base64url');
      const clientId = randomUUID();
      this.#store.tx(() => {
        if (this.#store.getPrincipal(name)) throw new VaultError('VAULT_CONFLICT', `principal '${name}' already exists`);
        this.#putPrincipalRecord({ name, tokenHash: sha256(secret).toString('base64'), clientId, created: Date.now(), policy: { secrets: [], keys: [] } });
      });
      const token = `${name}.${secret}`;
      return { name, token, tenantId: this.tenantId, clientId, clientSecret: token };
    });
  }

  async removePrincipal(name: string): Promise<void> {
    return this.#call('removePrincipal', 'owner', { id: `${this.uri}/principals/${String(name)}` }, () => {
      assertName(name, 'principal');
      if (!this.#store.tx(() => this.#store.deletePrincipal(name))) throw new VaultError('VAULT_PRINCIPAL_NOT_FOUND', `no principal '${name}'`);
    });
  }

  async listPrincipals(): Promise<PrincipalInfo[]> {
    return this.#call('listPrincipals', 'owner', { id: `${this.uri}/principals` }, () => this.#store.listPrincipals()
      .map((row) => this.#principalInfo(fromJson<PrincipalRecord>(this.#cipher.open(row.record, `principals|${row.name.toLowerCase()}`, `principal '${row.name}'`)))));
  }

  async setAccessPolicy(principal: string, policy: Partial<AccessPolicy>): Promise<PrincipalInfo> {
    return this.#call('setAccessPolicy', 'owner', { id: `${this.uri}/principals/${String(principal)}` }, () => {
      assertName(principal, 'principal');
      checkPolicy(policy);
      return this.#store.tx(() => {
        const r = this.#principalRecord(principal);
        if (!r) throw new VaultError('VAULT_PRINCIPAL_NOT_FOUND', `no principal '${principal}'`);
        const next: PrincipalRecord = {
          ...r,
          policy: { secrets: [...new Set(policy.secrets ?? r.policy.secrets)], keys: [...new Set(policy.keys ?? r.policy.keys)] },
        };
        this.#putPrincipalRecord(next);
        return this.#principalInfo(next);
      });
    });
  }

  async deleteAccessPolicy(principal: string): Promise<PrincipalInfo> {
    return this.setAccessPolicy(principal, { secrets: [], keys: [] });
  }

  async recordAuditEvent(operation: string, objectId: string, result: string): Promise<void> {
    this.#authorize('any', 'recordAuditEvent');
    if (typeof operation !== 'string' || !/^[A-Za-z][A-Za-z0-9.-]{0,63}$/.test(operation)) throw new VaultError('VAULT_BAD_ARGUMENT', 'an audit operation is 1-64 of A-Z, a-z, 0-9, . and -');
    if (typeof result !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(result)) throw new VaultError('VAULT_BAD_ARGUMENT', 'an audit result is 1-64 of A-Z, a-z, 0-9 and _');
    if (typeof objectId !== 'string' || (objectId !== this.uri && !objectId.startsWith(`${this.uri}/`))) {
      throw new VaultError('VAULT_BAD_ID', 'an audit event names an object of this vault');
    }
    await this.#audit(this.#principal, operation, objectId, result);
  }

  async readAudit(o: { sinceSeq?: number; limit?: number } = {}): Promise<AuditEntry[]> {
    return this.#call('readAudit', 'owner', { id: `${this.uri}/audit` }, () => {
      const all = readAudit(this.#store, this.#cipher).filter((e) => e.seq > (o.sinceSeq ?? 0));
      return o.limit !== undefined ? all.slice(-o.limit) : all;
    });
  }
}

function singular(kind: ObjectKind): string {
  return kind === 'secrets' ? 'secret' : 'key';
}

function notFound(kind: ObjectKind, name: string, version?: string): VaultError {
  const code: VaultErrorCode = kind === 'secrets' ? 'VAULT_SECRET_NOT_FOUND' : 'VAULT_KEY_NOT_FOUND';
  return new VaultError(code, `${singular(kind)} '${name}'${version ? ` version ${version}` : ''} not found`);
}
