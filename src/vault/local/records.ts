/** The JSON records sealed in the embedded vault's rows, and their conversion to API shapes. */
import type { AccessPolicy, KeyType, ObjectAttributes } from '../types.js';

/** Per-version attributes; dates as epoch milliseconds. */
export interface AttrsRecord {
  enabled: boolean;
  nbf: number | null;
  exp: number | null;
  created: number;
  updated: number;
}

export interface SecretRecord {
  attrs: AttrsRecord;
  contentType: string | null;
  tags: Record<string, string>;
}

export interface KeyRecord {
  attrs: AttrsRecord;
  kty: KeyType;
  size: number;
  tags: Record<string, string>;
}

/** Object-level state: the name as first written and the soft-delete marks. */
export interface ObjectState {
  name: string;
  deletedOn: number | null;
  scheduledPurge: number | null;
}

export interface PrincipalRecord {
  name: string;
  /** SHA-256 of the token's secret part, base64. */
  tokenHash: string;
  /** The Entra-style client id (a UUID) a vault server's token endpoint knows this principal by; absent in older records. */
  clientId?: string;
  created: number;
  policy: AccessPolicy;
}

export interface PropertiesRecord {
  enabledForDiskEncryption: boolean;
  softDeleteRetentionDays: number;
  purgeProtection: boolean;
  created: number;
}

export function toAttributes(a: AttrsRecord): ObjectAttributes {
  return {
    enabled: a.enabled,
    notBefore: a.nbf === null ? null : new Date(a.nbf),
    expiresOn: a.exp === null ? null : new Date(a.exp),
    created: new Date(a.created),
    updated: new Date(a.updated),
  };
}

export function newAttrs(o: { enabled?: boolean; notBefore?: Date | null; expiresOn?: Date | null }, now: number): AttrsRecord {
  return {
    enabled: o.enabled ?? true,
    nbf: o.notBefore ? o.notBefore.getTime() : null,
    exp: o.expiresOn ? o.expiresOn.getTime() : null,
    created: now,
    updated: now,
  };
}

export function updateAttrs(a: AttrsRecord, u: { enabled?: boolean; notBefore?: Date | null; expiresOn?: Date | null }, now: number): AttrsRecord {
  return {
    enabled: u.enabled ?? a.enabled,
    nbf: u.notBefore === undefined ? a.nbf : u.notBefore === null ? null : u.notBefore.getTime(),
    exp: u.expiresOn === undefined ? a.exp : u.expiresOn === null ? null : u.expiresOn.getTime(),
    created: a.created,
    updated: now,
  };
}

export function toJson(o: unknown): Buffer {
  return Buffer.from(JSON.stringify(o), 'utf8');
}

export function fromJson<T>(b: Buffer): T {
  return JSON.parse(b.toString('utf8')) as T;
}
