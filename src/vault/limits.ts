/**
 * Key Vault's object limits: names 1-127 of 0-9 a-z A-Z -, secret values up to
 * 10 KB (10240 bytes of UTF-8), contentType up to 255 characters, at most 15
 * tags with names up to 512 and values up to 256 characters.
 */
import { VaultError } from './errors.js';

export const MAX_SECRET_VALUE_BYTES = 10 * 1024;
export const MAX_CONTENT_TYPE_CHARS = 255;
export const MAX_TAGS = 15;
export const MAX_TAG_NAME_CHARS = 512;
export const MAX_TAG_VALUE_CHARS = 256;
const NAME_RE = /^[0-9A-Za-z-]{1,127}$/;

/** Refuse an object or principal name outside Key Vault's charset and length. */
export function assertName(name: string, what: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 140)) : typeof name;
    throw new VaultError('VAULT_BAD_NAME', `bad ${what} name ${shown}: 1-127 characters of 0-9, a-z, A-Z and '-'`);
  }
}

export function assertSecretValue(value: string): void {
  if (typeof value !== 'string') throw new VaultError('VAULT_BAD_ARGUMENT', 'a secret value is a string');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_SECRET_VALUE_BYTES) {
    throw new VaultError('VAULT_VALUE_TOO_LARGE', `secret value is ${bytes} bytes; at most ${MAX_SECRET_VALUE_BYTES}`);
  }
}

export function assertContentType(contentType: string | null | undefined): void {
  if (contentType == null) return;
  if (typeof contentType !== 'string') throw new VaultError('VAULT_BAD_ARGUMENT', 'contentType is a string');
  if (contentType.length > MAX_CONTENT_TYPE_CHARS) {
    throw new VaultError('VAULT_CONTENT_TYPE_TOO_LONG', `contentType is ${contentType.length} characters; at most ${MAX_CONTENT_TYPE_CHARS}`);
  }
}

/** Checks the tag count and lengths; returns a plain copy. */
export function checkTags(tags: Record<string, string> | undefined): Record<string, string> {
  if (tags === undefined) return {};
  if (tags === null || typeof tags !== 'object') throw new VaultError('VAULT_BAD_TAG', 'tags are a map of strings');
  const entries = Object.entries(tags);
  if (entries.length > MAX_TAGS) throw new VaultError('VAULT_TOO_MANY_TAGS', `${entries.length} tags; at most ${MAX_TAGS}`);
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_TAG_NAME_CHARS) {
      throw new VaultError('VAULT_BAD_TAG', `tag name of ${k.length} characters; 1-${MAX_TAG_NAME_CHARS}`);
    }
    if (typeof v !== 'string') throw new VaultError('VAULT_BAD_TAG', `tag '${k.slice(0, 64)}' has a non-string value`);
    if (v.length > MAX_TAG_VALUE_CHARS) {
      throw new VaultError('VAULT_BAD_TAG', `tag '${k.slice(0, 64)}' value of ${v.length} characters; at most ${MAX_TAG_VALUE_CHARS}`);
    }
    out[k] = v;
  }
  return out;
}

/** A date attribute must be a valid Date (or null to clear). */
export function checkDate(d: Date | null | undefined, what: string): Date | null | undefined {
  if (d === undefined || d === null) return d;
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new VaultError('VAULT_BAD_ARGUMENT', `${what} is not a valid date`);
  return d;
}

/** Soft-delete retention is 7-90 days, as Key Vault's. */
export function checkRetention(days: number): number {
  if (!Number.isInteger(days) || days < 7 || days > 90) throw new VaultError('VAULT_BAD_ARGUMENT', `softDeleteRetentionDays is 7-90, not ${days}`);
  return days;
}
