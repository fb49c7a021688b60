/**
 * Key Vault's data-plane wire shapes (azure-rest-api-specs, Microsoft.KeyVault data plane, secrets.json and
 * keys.json): bundles, list items, deleted bundles and the error body, built from the vault's own types. Times
 * are Unix seconds; binary values base64url without padding; object ids use the request's own origin.
 */
import type {
  DeletedObject, KeyProperties, ObjectAttributes, PublicJwk, SecretProperties, VaultKey, VaultProperties,
} from '../vault/index.js';

/** An error reply: status, `error.code`, message, and the inner code when Key Vault gives one. */
export class WireError extends Error {
  readonly status: number;
  readonly code: string;
  readonly inner: string | undefined;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, inner?: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.inner = inner;
    this.headers = headers;
  }
}

export function errorBody(e: WireError): { error: { code: string; message: string; innererror?: { code: string } } } {
  return { error: { code: e.code, message: e.message, ...(e.inner !== undefined ? { innererror: { code: e.inner } } : {}) } };
}

export const badParameter = (message: string): WireError => new WireError(400, 'BadParameter', message);

/** Key Vault's DeletionRecoveryLevel for the vault's soft-delete settings (Customized* below 90 days). */
export function recoveryLevel(p: VaultProperties): string {
  const custom = p.softDeleteRetentionDays < 90 ? 'CustomizedRecoverable' : 'Recoverable';
  return p.purgeProtection ? (custom === 'Recoverable' ? 'Recoverable+ProtectedSubscription' : 'CustomizedRecoverable+ProtectedSubscription') : `${custom}+Purgeable`;
}

const seconds = (d: Date): number => Math.floor(d.getTime() / 1000);

function attributes(a: ObjectAttributes, p: VaultProperties): Record<string, unknown> {
  return {
    enabled: a.enabled,
    ...(a.notBefore !== null ? { nbf: seconds(a.notBefore) } : {}),
    ...(a.expiresOn !== null ? { exp: seconds(a.expiresOn) } : {}),
    created: seconds(a.created),
    updated: seconds(a.updated),
    recoveryLevel: recoveryLevel(p),
    recoverableDays: p.softDeleteRetentionDays,
  };
}

function tags(t: Readonly<Record<string, string>>): { tags?: Record<string, string> } {
  return Object.keys(t).length > 0 ? { tags: { ...t } } : {};
}

export function secretBundle(origin: string, s: SecretProperties, p: VaultProperties, value?: string): Record<string, unknown> {
  return {
    ...(value !== undefined ? { value } : {}),
    id: `${origin}/secrets/${s.name}/${s.version}`,
    ...(s.contentType !== null ? { contentType: s.contentType } : {}),
    attributes: attributes(s, p),
    ...tags(s.tags),
  };
}

/** A list item: the id without a version when listing objects, with one when listing versions. */
export function secretItem(origin: string, s: SecretProperties, p: VaultProperties, withVersion: boolean): Record<string, unknown> {
  return {
    id: withVersion ? `${origin}/secrets/${s.name}/${s.version}` : `${origin}/secrets/${s.name}`,
    ...(s.contentType !== null ? { contentType: s.contentType } : {}),
    attributes: attributes(s, p),
    ...tags(s.tags),
  };
}

function deletedFields(origin: string, kind: 'secrets' | 'keys', d: DeletedObject): Record<string, unknown> {
  return {
    recoveryId: `${origin}/deleted${kind}/${d.name}`,
    deletedDate: seconds(d.deletedOn),
    scheduledPurgeDate: seconds(d.scheduledPurgeDate),
  };
}

export function deletedSecretBundle(origin: string, d: DeletedObject & { properties: SecretProperties }, p: VaultProperties, item = false): Record<string, unknown> {
  return { ...(item ? secretItem(origin, d.properties, p, false) : secretBundle(origin, d.properties, p)), ...deletedFields(origin, 'secrets', d) };
}

/** The operations a key allows: RSA keys encrypt and wrap, oct keys (AES key wrap) wrap only. */
function keyOps(k: PublicJwk | KeyProperties): string[] {
  return k.kty === 'RSA' ? ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'] : ['wrapKey', 'unwrapKey'];
}

export function keyBundle(origin: string, k: VaultKey, p: VaultProperties): Record<string, unknown> {
  const kid = `${origin}/keys/${k.properties.name}/${k.properties.version}`;
  return {
    key: { kid, kty: k.key.kty, key_ops: keyOps(k.key), ...(k.key.n !== undefined ? { n: k.key.n, e: k.key.e } : {}) },
    attributes: attributes(k.properties, p),
    ...tags(k.properties.tags),
  };
}

export function keyItem(origin: string, k: KeyProperties, p: VaultProperties, withVersion: boolean): Record<string, unknown> {
  return {
    kid: withVersion ? `${origin}/keys/${k.name}/${k.version}` : `${origin}/keys/${k.name}`,
    attributes: attributes(k, p),
    ...tags(k.tags),
  };
}

export function deletedKeyItem(origin: string, d: DeletedObject & { properties: KeyProperties }, p: VaultProperties): Record<string, unknown> {
  return { ...keyItem(origin, d.properties, p, false), ...deletedFields(origin, 'keys', d) };
}

/** A key bundle from properties alone (update, recover, restore, delete): the JWK without its public numbers. */
export function keyBundleOfProperties(origin: string, k: KeyProperties, p: VaultProperties): Record<string, unknown> {
  return { key: { kid: `${origin}/keys/${k.name}/${k.version}`, kty: k.kty, key_ops: keyOps(k) }, attributes: attributes(k, p), ...tags(k.tags) };
}

export function deletedKeyBundle(origin: string, d: DeletedObject & { properties: KeyProperties }, p: VaultProperties): Record<string, unknown> {
  return { ...keyBundleOfProperties(origin, d.properties, p), ...deletedFields(origin, 'keys', d) };
}

/** A vault error code as Key Vault's reply; `write` says whether the call wrote (a deleted name is then a conflict). */
export function wireErrorOf(code: string, message: string, kind: 'secrets' | 'keys' | null, write: boolean): WireError {
  const notFound = kind === 'keys' ? 'KeyNotFound' : 'SecretNotFound';
  switch (code) {
    case 'VAULT_SECRET_NOT_FOUND': return new WireError(404, 'SecretNotFound', message);
    case 'VAULT_KEY_NOT_FOUND': return new WireError(404, 'KeyNotFound', message);
    case 'VAULT_NOT_DELETED': return new WireError(404, notFound, message);
    case 'VAULT_DELETED':
      return write
        ? new WireError(409, 'Conflict', message, 'ObjectIsDeletedButRecoverable')
        : new WireError(404, notFound, message);
    case 'VAULT_FORBIDDEN': return new WireError(403, 'Forbidden', message, 'AccessDenied');
    case 'VAULT_UNAUTHENTICATED': return new WireError(401, 'Unauthorized', message);
    case 'VAULT_SECRET_DISABLED': return new WireError(403, 'Forbidden', message, 'SecretDisabled');
    case 'VAULT_SECRET_NOT_YET_VALID': return new WireError(403, 'Forbidden', message, 'SecretNotYetValid');
    case 'VAULT_SECRET_EXPIRED': return new WireError(403, 'Forbidden', message, 'SecretExpired');
    case 'VAULT_KEY_DISABLED': return new WireError(403, 'Forbidden', message, 'KeyDisabled');
    case 'VAULT_KEY_NOT_YET_VALID': return new WireError(403, 'Forbidden', message, 'KeyNotYetValid');
    case 'VAULT_KEY_EXPIRED': return new WireError(403, 'Forbidden', message, 'KeyExpired');
    case 'VAULT_PURGE_PROTECTED': return new WireError(403, 'Forbidden', message, 'PurgeProtected');
    case 'VAULT_CONFLICT': return new WireError(409, 'Conflict', message);
    case 'VAULT_BAD_NAME': case 'VAULT_BAD_ID': case 'VAULT_BAD_ARGUMENT': case 'VAULT_VALUE_TOO_LARGE':
    case 'VAULT_CONTENT_TYPE_TOO_LONG': case 'VAULT_TOO_MANY_TAGS': case 'VAULT_BAD_TAG': case 'VAULT_INVALID_KEY':
    case 'VAULT_UNSUPPORTED_ALGORITHM': case 'VAULT_BAD_BACKUP': case 'VAULT_UNWRAP_FAILED':
      return new WireError(400, 'BadParameter', message);
    default:
      // Storage trouble or tampering: the detail goes to the server's log, not to the client.
      return new WireError(500, 'InternalServerError', 'The vault could not complete the request.');
  }
}
