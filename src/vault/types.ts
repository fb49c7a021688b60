/**
 * The provider-neutral vault interface, after Azure Key Vault's data plane:
 * every call is async and acts as one principal, objects are named by URI ids
 * (`<vault-uri>/secrets/<name>/<version>`), failures are VaultErrors with codes.
 * The embedded local vault implements it now; Azure Key Vault, a vault server
 * or an HSM can implement it later.
 */

import type { JsonWebKey } from 'node:crypto';

export type { JsonWebKey };

/** Per-version attributes shared by secrets and keys. Dates are absolute instants. */
export interface ObjectAttributes {
  readonly enabled: boolean;
  readonly notBefore: Date | null;
  readonly expiresOn: Date | null;
  readonly created: Date;
  readonly updated: Date;
}

/** What an attribute update may change (absent = unchanged, null = cleared). */
export interface AttributesUpdate {
  readonly enabled?: boolean;
  readonly notBefore?: Date | null;
  readonly expiresOn?: Date | null;
  readonly tags?: Record<string, string>;
}

export interface SecretProperties extends ObjectAttributes {
  /** Full id with version. */
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly contentType: string | null;
  readonly tags: Readonly<Record<string, string>>;
}

export interface Secret {
  readonly value: string;
  readonly properties: SecretProperties;
}

export interface SetSecretOptions {
  readonly contentType?: string;
  readonly tags?: Record<string, string>;
  readonly enabled?: boolean;
  readonly notBefore?: Date | null;
  readonly expiresOn?: Date | null;
}

export interface SecretUpdate extends AttributesUpdate {
  readonly contentType?: string | null;
}

export type KeyType = 'RSA' | 'oct';
export type WrapAlgorithm = 'RSA-OAEP' | 'RSA-OAEP-256' | 'A256KW';
export const WRAP_ALGORITHMS: readonly WrapAlgorithm[] = ['RSA-OAEP', 'RSA-OAEP-256', 'A256KW'];
/** encrypt/decrypt: Key Vault's RSA encryption algorithms, the same RSA-OAEP operations as wrap/unwrap. */
export type EncryptAlgorithm = 'RSA-OAEP' | 'RSA-OAEP-256';
export const ENCRYPT_ALGORITHMS: readonly EncryptAlgorithm[] = ['RSA-OAEP', 'RSA-OAEP-256'];

/** The public part of a key as a JWK: never `d`, `p`, `q`, `dp`, `dq`, `qi` or `k`. */
export interface PublicJwk {
  readonly kid: string;
  readonly kty: KeyType;
  readonly key_ops: readonly string[];
  readonly n?: string;
  readonly e?: string;
}

export interface KeyProperties extends ObjectAttributes {
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly kty: KeyType;
  /** Modulus bits for RSA, key bits for oct. */
  readonly keySize: number;
  readonly tags: Readonly<Record<string, string>>;
}

export interface VaultKey {
  readonly key: PublicJwk;
  readonly properties: KeyProperties;
}

export interface CreateKeyOptions {
  readonly kty: KeyType;
  /** RSA: 2048 (default), 3072, 4096; oct: 256 (the only size). */
  readonly size?: number;
  readonly tags?: Record<string, string>;
  readonly enabled?: boolean;
  readonly notBefore?: Date | null;
  readonly expiresOn?: Date | null;
  /** When a live key of that name exists, return its latest version instead of adding one (atomic create-on-first-use). */
  readonly onlyIfAbsent?: boolean;
}

export type ImportKeyOptions = Omit<CreateKeyOptions, 'kty' | 'size' | 'onlyIfAbsent'>;

export interface WrapResult {
  /** Full id (with version) of the key that did the work. */
  readonly kid: string;
  readonly alg: WrapAlgorithm;
  readonly result: Uint8Array;
}

export interface EncryptResult {
  /** Full id (with version) of the key that did the work. */
  readonly kid: string;
  readonly alg: EncryptAlgorithm;
  readonly result: Uint8Array;
}

export interface DeletedObject {
  readonly id: string;
  readonly name: string;
  readonly deletedOn: Date;
  readonly scheduledPurgeDate: Date;
}

export interface VaultProperties {
  readonly uri: string;
  readonly enabledForDiskEncryption: boolean;
  readonly softDeleteRetentionDays: number;
  /** Once on, deleted objects cannot be purged before their retention ends (cannot be turned off). */
  readonly purgeProtection: boolean;
  readonly created: Date;
}

export type VaultPropertiesUpdate = Partial<Pick<VaultProperties, 'enabledForDiskEncryption' | 'softDeleteRetentionDays' | 'purgeProtection'>>;

export const SECRET_PERMISSIONS = ['get', 'list', 'set', 'delete', 'recover', 'purge', 'backup', 'restore'] as const;
export const KEY_PERMISSIONS = [
  'get', 'list', 'create', 'import', 'update', 'delete', 'recover', 'purge', 'backup', 'restore', 'wrapKey', 'unwrapKey', 'encrypt', 'decrypt',
] as const;
export type SecretPermission = (typeof SECRET_PERMISSIONS)[number];
export type KeyPermission = (typeof KEY_PERMISSIONS)[number];

export interface AccessPolicy {
  readonly secrets: readonly SecretPermission[];
  readonly keys: readonly KeyPermission[];
}

export interface PrincipalInfo {
  readonly name: string;
  readonly created: Date;
  readonly policy: AccessPolicy;
}

export interface AuditEntry {
  readonly seq: number;
  readonly time: Date;
  readonly principal: string;
  readonly operation: string;
  /** Object id with version when the call named one, else the vault uri. */
  readonly objectId: string;
  /** 'ok' or the error code the call failed with. */
  readonly result: string;
  /** The caller's network address, when the call came through a vault server. */
  readonly client?: string;
}

/**
 * What addPrincipal returns, once: `token` for the embedded vault ($VHDCRYPT_VAULT_TOKEN), and Entra-style client
 * credentials for a vault server's token endpoint (`clientSecret` is the same secret as `token`).
 */
export interface NewPrincipal {
  readonly name: string;
  readonly token: string;
  readonly tenantId?: string;
  readonly clientId?: string;
  readonly clientSecret?: string;
}

/** The vault operations; every method checks the calling principal's permission first. */
export interface Vault {
  readonly uri: string;
  /** The RSA size sealDiskKey gives a KEK it creates (default 2048). */
  readonly kekRsaBits?: number;
  /** The principal this handle acts as. */
  readonly principal: string;
  close(): Promise<void>;

  getProperties(): Promise<VaultProperties>;
  /** Owner only. */
  setProperties(update: VaultPropertiesUpdate): Promise<VaultProperties>;

  setSecret(name: string, value: string, options?: SetSecretOptions): Promise<SecretProperties>;
  /** `nameOrId` is a name or a full id; a version in the id wins over `version`. */
  getSecret(nameOrId: string, version?: string): Promise<Secret>;
  /** The latest version of each (non-deleted) secret; never values. */
  listSecrets(): Promise<SecretProperties[]>;
  /** Every version of one secret, oldest first; never values. */
  listSecretVersions(name: string): Promise<SecretProperties[]>;
  updateSecretProperties(nameOrId: string, version: string | undefined, update: SecretUpdate): Promise<SecretProperties>;
  deleteSecret(name: string): Promise<DeletedObject>;
  listDeletedSecrets(): Promise<Array<DeletedObject & { properties: SecretProperties }>>;
  recoverDeletedSecret(name: string): Promise<SecretProperties>;
  purgeDeletedSecret(name: string): Promise<void>;
  backupSecret(name: string): Promise<Uint8Array>;
  restoreSecretBackup(blob: Uint8Array): Promise<SecretProperties>;

  createKey(name: string, options: CreateKeyOptions): Promise<VaultKey>;
  importKey(name: string, jwk: JsonWebKey, options?: ImportKeyOptions): Promise<VaultKey>;
  /** Public part only. */
  getKey(nameOrId: string, version?: string): Promise<VaultKey>;
  listKeys(): Promise<KeyProperties[]>;
  listKeyVersions(name: string): Promise<KeyProperties[]>;
  updateKeyProperties(nameOrId: string, version: string | undefined, update: AttributesUpdate): Promise<KeyProperties>;
  /** A new version of the same type and size (needs keys/create). */
  rotateKey(name: string): Promise<VaultKey>;
  deleteKey(name: string): Promise<DeletedObject>;
  listDeletedKeys(): Promise<Array<DeletedObject & { properties: KeyProperties }>>;
  recoverDeletedKey(name: string): Promise<KeyProperties>;
  purgeDeletedKey(name: string): Promise<void>;
  backupKey(name: string): Promise<Uint8Array>;
  restoreKeyBackup(blob: Uint8Array): Promise<KeyProperties>;
  /** Wrap with the named key (latest version unless the id carries one); refused outside nbf..exp. */
  wrapKey(nameOrId: string, alg: WrapAlgorithm, plaintext: Uint8Array): Promise<WrapResult>;
  /** Unwrap; refused only when the key version is disabled (dates never lock data out). */
  unwrapKey(nameOrId: string, alg: WrapAlgorithm, wrapped: Uint8Array): Promise<WrapResult>;
  /** RSA-OAEP encryption of a short value with an RSA key (keys/encrypt); the date rules of wrapKey. */
  encrypt(nameOrId: string, alg: EncryptAlgorithm, plaintext: Uint8Array): Promise<EncryptResult>;
  /** The inverse of encrypt (keys/decrypt); the rules of unwrapKey. */
  decrypt(nameOrId: string, alg: EncryptAlgorithm, ciphertext: Uint8Array): Promise<EncryptResult>;

  /** Owner only: adds a principal and returns its bearer token and client credentials (shown once, stored hashed). */
  addPrincipal(name: string): Promise<NewPrincipal>;
  removePrincipal(name: string): Promise<void>;
  listPrincipals(): Promise<PrincipalInfo[]>;
  setAccessPolicy(principal: string, policy: Partial<AccessPolicy>): Promise<PrincipalInfo>;
  deleteAccessPolicy(principal: string): Promise<PrincipalInfo>;
  /**
   * Record in the audit log an event of an operation done on top of this interface (rotateKek's skipped
   * secrets), under this handle's principal. `operation` and `result` are short identifiers; `objectId` is an
   * id of this vault.
   */
  recordAuditEvent(operation: string, objectId: string, result: string): Promise<void>;
  /** Owner only: the audit log, oldest first; verifies its MAC chain. */
  readAudit(options?: { sinceSeq?: number; limit?: number }): Promise<AuditEntry[]>;
}

/** How a caller authenticates: none = the vault's owner (see openVault), else a bearer token. */
export interface VaultCredentials {
  /** `<principal>.<secret>` as returned by addPrincipal. */
  readonly token?: string;
  /** The master-key passphrase (else $VHDCRYPT_VAULT_PASSPHRASE, else the key file). */
  readonly passphrase?: string;
}
