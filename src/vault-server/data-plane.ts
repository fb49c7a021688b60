/**
 * Key Vault's data plane over the vault: each route maps a method and path (secrets.json / keys.json of the
 * Microsoft.KeyVault data-plane spec) onto a call of a handle acting as the token's principal, so the vault's own
 * rules (access policies, dates, enabled, soft delete, audit) decide, exactly as for a local caller.
 */
import { randomBytes } from 'node:crypto';
import type { LocalVault } from '../vault/local/local-vault.js';
import type { DeletedObject, EncryptAlgorithm, JsonWebKey, KeyProperties, KeyType, SecretProperties, VaultProperties, WrapAlgorithm } from '../vault/index.js';

type DeletedSecret = DeletedObject & { properties: SecretProperties };
type DeletedKey = DeletedObject & { properties: KeyProperties };
import {
  WireError, badParameter, deletedKeyBundle, deletedKeyItem, deletedSecretBundle, keyBundle, keyBundleOfProperties, keyItem, secretBundle, secretItem,
} from './wire.js';

export interface DataRequest {
  readonly method: string;
  /** Path segments after the first '/', percent-decoded; empty ones kept (`/keys/k//wrapkey`). */
  readonly seg: readonly string[];
  readonly query: URLSearchParams;
  readonly origin: string;
  readonly apiVersion: string;
  readonly body: unknown;
  readonly vault: LocalVault;
}

export interface Reply {
  readonly status: number;
  readonly body?: unknown;
}

/** Which kind a failed call was about and whether it wrote, for the error reply (wireErrorOf). */
export interface RouteInfo {
  kind: 'secrets' | 'keys' | null;
  write: boolean;
}

const MAX_PAGE = 25;
const VERSION_RE = /^[0-9a-f]{32}$/i;
const MAX_RNG_BYTES = 128;

function methodNotAllowed(method: string): WireError {
  return new WireError(405, 'MethodNotAllowed', `HTTP ${method} not allowed`);
}

function notFoundRoute(): WireError {
  return new WireError(404, 'NotFound', 'The requested resource was not found.');
}

// ---- request body fields ----

function object(body: unknown, what: string): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw badParameter(`${what}: the request body must be a JSON object`);
  return body as Record<string, unknown>;
}

function optString(o: Record<string, unknown>, k: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw badParameter(`'${k}' must be a string`);
  return v;
}

function optTags(o: Record<string, unknown>): Record<string, string> | undefined {
  const t = o.tags;
  if (t === undefined || t === null) return undefined;
  if (typeof t !== 'object' || Array.isArray(t)) throw badParameter("'tags' must be an object of strings");
  for (const [k, v] of Object.entries(t)) if (typeof v !== 'string') throw badParameter(`tag '${k.slice(0, 64)}' must be a string`);
  return t as Record<string, string>;
}

/** `attributes` of a request: enabled, nbf and exp (Unix seconds; null clears a date on update). */
function optAttributes(o: Record<string, unknown>): { enabled?: boolean; notBefore?: Date | null; expiresOn?: Date | null } {
  const a = o.attributes;
  if (a === undefined || a === null) return {};
  if (typeof a !== 'object' || Array.isArray(a)) throw badParameter("'attributes' must be an object");
  const attrs = a as Record<string, unknown>;
  const out: { enabled?: boolean; notBefore?: Date | null; expiresOn?: Date | null } = {};
  if (attrs.enabled !== undefined && attrs.enabled !== null) {
    if (typeof attrs.enabled !== 'boolean') throw badParameter("'attributes.enabled' must be true or false");
    out.enabled = attrs.enabled;
  }
  for (const [k, field] of [['nbf', 'notBefore'], ['exp', 'expiresOn']] as const) {
    const v = attrs[k];
    if (v === undefined) continue;
    if (v === null) {
      out[field] = null;
      continue;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > 253_402_300_799) throw badParameter(`'attributes.${k}' must be Unix seconds`);
    out[field] = new Date(v * 1000);
  }
  return out;
}

/** A base64url value (standard base64 accepted too, as older clients send it). */
function bytes(o: Record<string, unknown>, k: string): Buffer {
  const v = o[k];
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) throw badParameter(`'${k}' must be base64url`);
  return Buffer.from(v.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''), 'base64url');
}

// ---- paging ----

function page<T>(r: DataRequest, all: T[], map: (x: T) => unknown): Reply {
  const raw = r.query.get('maxresults');
  let size = MAX_PAGE;
  if (raw !== null && raw !== '') {
    if (!/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_PAGE) throw badParameter(`maxresults must be 1-${MAX_PAGE}, not ${JSON.stringify(raw.slice(0, 16))}`);
    size = Number(raw);
  }
  const token = r.query.get('$skiptoken');
  let start = 0;
  if (token !== null && token !== '') {
    if (!/^\d{1,9}$/.test(token)) throw badParameter('malformed $skiptoken');
    start = Number(token);
  }
  const items = all.slice(start, start + size).map(map);
  const more = start + size < all.length;
  // Absolute, on the request's own origin: the SDK follows it verbatim and refuses another origin.
  const path = '/' + r.seg.filter((s, i) => s !== '' || i === 0).map(encodeURIComponent).join('/');
  const nextLink = more
    ? `${r.origin}${path}?api-version=${encodeURIComponent(r.apiVersion)}&$skiptoken=${start + size}&maxresults=${size}`
    : null;
  return { status: 200, body: { value: items, nextLink } };
}

// ---- routes ----

function version(v: string | undefined, kind: 'secrets' | 'keys', name: string): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (!VERSION_RE.test(v)) throw new WireError(404, kind === 'secrets' ? 'SecretNotFound' : 'KeyNotFound', `A ${kind === 'secrets' ? 'secret' : 'key'} with (name/id) ${name}/${v} was not found in this key vault.`);
  return v.toLowerCase();
}

async function secrets(r: DataRequest, info: RouteInfo, props: () => VaultProperties): Promise<Reply> {
  const v = r.vault;
  const [, name, sub, extra] = r.seg;
  info.kind = 'secrets';
  if (name === undefined || (name === '' && sub === undefined)) {
    if (r.method !== 'GET') throw methodNotAllowed(r.method);
    const list = await v.listSecrets();
    const p = props();
    return page(r, list, (s) => secretItem(r.origin, s, p, false));
  }
  if (extra !== undefined) throw notFoundRoute();
  if (name === 'restore' && sub === undefined && r.method === 'POST') {
    info.write = true;
    const restored = await v.restoreSecretBackup(bytes(object(r.body, 'restore'), 'value'));
    return { status: 200, body: secretBundle(r.origin, restored, props()) };
  }
  if (sub === 'versions') {
    if (r.method !== 'GET') throw methodNotAllowed(r.method);
    const list = await v.listSecretVersions(name);
    const p = props();
    return page(r, list, (s) => secretItem(r.origin, s, p, true));
  }
  if (sub === 'backup') {
    if (r.method !== 'POST') throw methodNotAllowed(r.method);
    const blob = await v.backupSecret(name);
    return { status: 200, body: { value: Buffer.from(blob).toString('base64url') } };
  }
  if (sub === undefined && r.method === 'PUT') {
    info.write = true;
    const o = object(r.body, 'set secret');
    const value = o.value;
    if (typeof value !== 'string') throw badParameter("'value' must be a string");
    const set = await v.setSecret(name, value, { contentType: optString(o, 'contentType'), tags: optTags(o), ...optAttributes(o) });
    return { status: 200, body: secretBundle(r.origin, set, props(), value) };
  }
  if (sub === undefined && r.method === 'DELETE') {
    const d = await v.deleteSecret(name);
    return { status: 200, body: deletedSecretBundle(r.origin, d, props()) };
  }
  if (r.method !== 'GET' && r.method !== 'PATCH') throw methodNotAllowed(r.method);
  const ver = version(sub, 'secrets', name);
  if (r.method === 'GET') {
    const s = await v.getSecret(name, ver);
    return { status: 200, body: secretBundle(r.origin, s.properties, props(), s.value) };
  }
  if (r.method === 'PATCH') {
    const o = object(r.body, 'update secret');
    const ct = o.contentType;
    if (ct !== undefined && ct !== null && typeof ct !== 'string') throw badParameter("'contentType' must be a string");
    const u = await v.updateSecretProperties(name, ver, { ...optAttributes(o), tags: optTags(o), ...(typeof ct === 'string' ? { contentType: ct } : {}) });
    return { status: 200, body: secretBundle(r.origin, u, props()) };
  }
  throw methodNotAllowed(r.method);
}

async function deleted(r: DataRequest, info: RouteInfo, props: () => VaultProperties, kind: 'secrets' | 'keys'): Promise<Reply> {
  const v = r.vault;
  const [, name, sub, extra] = r.seg;
  info.kind = kind;
  const list = (): Promise<Array<DeletedSecret | DeletedKey>> => (kind === 'secrets' ? v.listDeletedSecrets() : v.listDeletedKeys());
  if (name === undefined || (name === '' && sub === undefined)) {
    if (r.method !== 'GET') throw methodNotAllowed(r.method);
    const all = await list();
    const p = props();
    return page(r, all, (d) => (kind === 'secrets' ? deletedSecretBundle(r.origin, d as DeletedSecret, p, true) : deletedKeyItem(r.origin, d as DeletedKey, p)));
  }
  if (extra !== undefined || (sub !== undefined && sub !== 'recover')) throw notFoundRoute();
  if (sub === 'recover') {
    if (r.method !== 'POST') throw methodNotAllowed(r.method);
    if (kind === 'secrets') return { status: 200, body: secretBundle(r.origin, await v.recoverDeletedSecret(name), props()) };
    return { status: 200, body: keyBundleOfProperties(r.origin, await v.recoverDeletedKey(name), props()) };
  }
  if (r.method === 'DELETE') {
    if (kind === 'secrets') await v.purgeDeletedSecret(name);
    else await v.purgeDeletedKey(name);
    return { status: 204 };
  }
  if (r.method !== 'GET') throw methodNotAllowed(r.method);
  const found = (await list()).find((d) => d.name.toLowerCase() === name.toLowerCase());
  if (found === undefined) {
    throw new WireError(404, kind === 'secrets' ? 'SecretNotFound' : 'KeyNotFound', `Deleted ${kind === 'secrets' ? 'Secret' : 'Key'} not found: ${name}`);
  }
  const p = props();
  return {
    status: 200,
    body: kind === 'secrets' ? deletedSecretBundle(r.origin, found as DeletedSecret, p) : deletedKeyBundle(r.origin, found as DeletedKey, p),
  };
}

const KEY_OPERATIONS = new Set(['wrapkey', 'unwrapkey', 'encrypt', 'decrypt']);

async function keys(r: DataRequest, info: RouteInfo, props: () => VaultProperties): Promise<Reply> {
  const v = r.vault;
  const [, name, sub, op, extra] = r.seg;
  info.kind = 'keys';
  if (name === undefined || (name === '' && sub === undefined)) {
    if (r.method !== 'GET') throw methodNotAllowed(r.method);
    const list = await v.listKeys();
    const p = props();
    return page(r, list, (k) => keyItem(r.origin, k, p, false));
  }
  if (extra !== undefined) throw notFoundRoute();
  if (op !== undefined) {
    const operation = op.toLowerCase();
    if (!KEY_OPERATIONS.has(operation)) throw notFoundRoute();
    if (r.method !== 'POST') throw methodNotAllowed(r.method);
    return keyOperation(r, name, version(sub, 'keys', name), operation);
  }
  if (name === 'restore' && sub === undefined && r.method === 'POST') {
    info.write = true;
    const k = await v.restoreKeyBackup(bytes(object(r.body, 'restore'), 'value'));
    return { status: 200, body: keyBundleOfProperties(r.origin, k, props()) };
  }
  switch (sub?.toLowerCase()) {
    case 'create': {
      if (r.method !== 'POST') throw methodNotAllowed(r.method);
      info.write = true;
      const o = object(r.body, 'create key');
      const kty = o.kty;
      if (kty !== 'RSA' && kty !== 'oct') {
        throw badParameter(`kty ${JSON.stringify(kty)} is not supported here: RSA (2048, 3072, 4096) or oct (256)`);
      }
      const size = o.key_size;
      if (size !== undefined && size !== null && (typeof size !== 'number' || !Number.isSafeInteger(size))) throw badParameter("'key_size' must be a number");
      const e = o.public_exponent;
      if (e !== undefined && e !== null && e !== 65537) throw badParameter('public_exponent must be 65537');
      const k = await v.createKey(name, { kty: kty as KeyType, ...(typeof size === 'number' ? { size } : {}), tags: optTags(o), ...optAttributes(o) });
      return { status: 200, body: keyBundle(r.origin, k, props()) };
    }
    case 'versions': {
      if (r.method !== 'GET') throw methodNotAllowed(r.method);
      const list = await v.listKeyVersions(name);
      const p = props();
      return page(r, list, (k) => keyItem(r.origin, k, p, true));
    }
    case 'backup': {
      if (r.method !== 'POST') throw methodNotAllowed(r.method);
      return { status: 200, body: { value: Buffer.from(await v.backupKey(name)).toString('base64url') } };
    }
    case 'rotate': {
      if (r.method !== 'POST') throw methodNotAllowed(r.method);
      return { status: 200, body: keyBundle(r.origin, await v.rotateKey(name), props()) };
    }
    default:
  }
  if (sub === undefined && r.method === 'PUT') {
    info.write = true;
    const o = object(r.body, 'import key');
    const jwk = o.key;
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) throw badParameter("'key' must be a JSON Web Key");
    const k = await v.importKey(name, jwk as JsonWebKey, { tags: optTags(o), ...optAttributes(o) });
    return { status: 200, body: keyBundle(r.origin, k, props()) };
  }
  if (sub === undefined && r.method === 'DELETE') {
    return { status: 200, body: deletedKeyBundle(r.origin, await v.deleteKey(name), props()) };
  }
  if (r.method !== 'GET' && r.method !== 'PATCH') throw methodNotAllowed(r.method);
  const ver = version(sub, 'keys', name);
  if (r.method === 'GET') return { status: 200, body: keyBundle(r.origin, await v.getKey(name, ver), props()) };
  if (r.method === 'PATCH') {
    const o = object(r.body, 'update key');
    const u = await v.updateKeyProperties(name, ver, { ...optAttributes(o), tags: optTags(o) });
    return { status: 200, body: keyBundleOfProperties(r.origin, u, props()) };
  }
  throw methodNotAllowed(r.method);
}

async function keyOperation(r: DataRequest, name: string, ver: string | undefined, operation: string): Promise<Reply> {
  const o = object(r.body, operation);
  const alg = o.alg;
  if (typeof alg !== 'string') throw badParameter("'alg' must be a string");
  const data = bytes(o, 'value');
  const ref = ver === undefined ? name : `${r.vault.uri}/keys/${name}/${ver}`;
  const v = r.vault;
  const res = operation === 'wrapkey' ? await v.wrapKey(ref, alg as WrapAlgorithm, data)
    : operation === 'unwrapkey' ? await v.unwrapKey(ref, alg as WrapAlgorithm, data)
      : operation === 'encrypt' ? await v.encrypt(ref, alg as EncryptAlgorithm, data)
        : await v.decrypt(ref, alg as EncryptAlgorithm, data);
  try {
    // The vault's id of the version that did the work ends in <name>/<version>.
    const [keyVersion, keyName] = res.kid.split('/').reverse();
    return { status: 200, body: { kid: `${r.origin}/keys/${keyName}/${keyVersion}`, value: Buffer.from(res.result).toString('base64url') } };
  } finally {
    res.result.fill(0);
  }
}

async function rng(r: DataRequest): Promise<Reply> {
  if (r.method !== 'POST') throw methodNotAllowed(r.method);
  const o = object(r.body, 'rng');
  const count = o.count;
  if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1 || count > MAX_RNG_BYTES) throw badParameter(`'count' must be 1-${MAX_RNG_BYTES}`);
  // Any authenticated principal may ask (as Managed HSM's rng); the handle checks it still exists and records the call.
  await r.vault.recordAuditEvent('getRandomBytes', r.vault.uri, 'ok');
  return { status: 200, body: { value: randomBytes(count).toString('base64url') } };
}

/** Route one authenticated data-plane request. */
export async function dataPlane(r: DataRequest, info: RouteInfo): Promise<Reply> {
  let cached: VaultProperties | undefined;
  const props = (): VaultProperties => (cached ??= r.vault.currentProperties());
  switch (r.seg[0]?.toLowerCase()) {
    case 'secrets': return secrets(r, info, props);
    case 'deletedsecrets': return deleted(r, info, props, 'secrets');
    case 'keys': return keys(r, info, props);
    case 'deletedkeys': return deleted(r, info, props, 'keys');
    case 'rng': return rng(r);
    default: throw notFoundRoute();
  }
}
