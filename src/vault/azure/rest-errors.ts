/**
 * The SDKs' failures as the vault's typed errors. A RestError's status and Key Vault's error codes
 * ({"error":{"code","message","innererror":{"code"}}}) decide the code; a request that never got an answer is
 * VAULT_UNREACHABLE naming the host; a credential that could not get a token is VAULT_AUTH_FAILED naming
 * which credential of the chain failed and why. Messages carry names, ids, statuses and the service's own
 * error text (which never holds a secret value), never a request body. The SDK's error is not kept as the
 * cause: it carries the request, Authorization header (a bearer token) included, into any log that prints it.
 */
import { VaultError, type VaultErrorCode } from '../errors.js';
import { TRY_TIMEOUT_MS } from './connection.js';

/** What a call was acting on: decides which NOT_FOUND/DISABLED code a 404/403 becomes. */
export interface CallContext {
  readonly kind: 'secrets' | 'keys' | 'vault';
  /** Short description for the message: `get secret 'disk1'`. */
  readonly what: string;
  /** unwrapKey/decrypt: a 400 means the data did not unwrap. */
  readonly unwrap?: boolean;
}

interface RestErrorLike {
  name?: string;
  message?: string;
  statusCode?: number;
  code?: string;
  details?: { error?: { code?: string; message?: string; innerError?: unknown } };
  errors?: unknown[];
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ECONNABORTED',
  'REQUEST_SEND_ERROR', 'UND_ERR_SOCKET',
]);
/** Key Vault's inner error codes of a 403 that say why, and the vault's codes for them. */
const FORBIDDEN_DETAIL: ReadonlyArray<readonly [string, VaultErrorCode]> = [
  ['SecretDisabled', 'VAULT_SECRET_DISABLED'], ['SecretNotYetValid', 'VAULT_SECRET_NOT_YET_VALID'], ['SecretExpired', 'VAULT_SECRET_EXPIRED'],
  ['KeyDisabled', 'VAULT_KEY_DISABLED'], ['KeyNotYetValid', 'VAULT_KEY_NOT_YET_VALID'], ['KeyExpired', 'VAULT_KEY_EXPIRED'],
  ['PurgeProtected', 'VAULT_PURGE_PROTECTED'],
];
const TLS_CODES = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS|ERR_SSL|HOSTNAME_MISMATCH)/;

function clip(s: unknown, n = 240): string {
  return String(s ?? '').replace(/\s+/g, ' ').trim().slice(0, n);
}

/** Every code in the error and its inner errors, outermost first. */
function serviceCodes(e: RestErrorLike): string[] {
  const out: string[] = [];
  if (e.code) out.push(e.code);
  let inner: unknown = e.details?.error;
  for (let depth = 0; inner && typeof inner === 'object' && depth < 8; depth++) {
    const c = (inner as { code?: unknown }).code;
    if (typeof c === 'string') out.push(c);
    inner = (inner as { innerError?: unknown; innererror?: unknown }).innerError ?? (inner as { innererror?: unknown }).innererror;
  }
  return out;
}

function isCredentialError(e: RestErrorLike): boolean {
  return e.name === 'CredentialUnavailableError' || e.name === 'AuthenticationError' || e.name === 'AggregateAuthenticationError'
    || e.name === 'AuthenticationRequiredError';
}

/** "DefaultAzureCredential: EnvironmentCredential: ...; ManagedIdentityCredential: ..." trimmed to the useful part. */
function credentialText(e: RestErrorLike): string {
  const parts = Array.isArray(e.errors) && e.errors.length > 0
    ? e.errors.map((x) => clip((x as RestErrorLike).message, 200))
    : [clip(e.message, 400)];
  // Each identity message starts with the credential's name; the troubleshooting links add nothing here.
  return parts.map((p) => p.replace(/\s*(To troubleshoot|Troubleshooting guide|See the troubleshooting|For more information).*$/i, '')).join('; ');
}

/** The typed error for a failed SDK call against vault `uri`; a VaultError passes through. */
export function vaultErrorOf(e: unknown, uri: string, ctx: CallContext): VaultError {
  if (e instanceof VaultError) return e;
  const r = (e ?? {}) as RestErrorLike;
  const host = (() => {
    try {
      return new URL(uri).host;
    } catch {
      return uri;
    }
  })();
  if (isCredentialError(r)) {
    return new VaultError('VAULT_AUTH_FAILED', `${ctx.what}: no token for ${host}: ${credentialText(r)}`);
  }
  const status = r.statusCode;
  if (status === undefined) {
    const code = r.code ?? (e as { cause?: { code?: string } })?.cause?.code;
    if (code && TLS_CODES.test(code)) {
      return new VaultError('VAULT_UNREACHABLE', `${ctx.what}: TLS to ${host} failed (${code}); for a private CA set VHDCRYPT_VAULT_CA to its PEM file`);
    }
    if (r.name === 'AbortError') {
      return new VaultError('VAULT_UNREACHABLE', `${ctx.what}: vault ${host} did not answer within ${TRY_TIMEOUT_MS / 1000} s`);
    }
    if ((code !== undefined && NETWORK_CODES.has(code)) || r.name === 'RestError') {
      return new VaultError('VAULT_UNREACHABLE', `${ctx.what}: vault ${host} unreachable (${code ?? clip(r.message, 80)}) after retries`);
    }
    return new VaultError('VAULT_UNREACHABLE', `${ctx.what}: vault ${host}: ${clip(r.message)}`);
  }
  const codes = serviceCodes(r);
  const has = (c: string) => codes.some((x) => x.toLowerCase() === c.toLowerCase());
  const said = clip(r.details?.error?.message ?? r.message);
  const make = (code: VaultErrorCode) => new VaultError(code, `${ctx.what}: ${said || `HTTP ${status}`} (HTTP ${status}${codes.length ? ` ${codes.join('/')}` : ''})`);
  switch (status) {
    case 400:
      if (ctx.unwrap) return make('VAULT_UNWRAP_FAILED');
      if (has('BadParameter') && /algorithm/i.test(said)) return make('VAULT_UNSUPPORTED_ALGORITHM');
      return make('VAULT_BAD_ARGUMENT');
    case 401:
      return make('VAULT_AUTH_FAILED');
    case 403:
      for (const [inner, code] of FORBIDDEN_DETAIL) if (has(inner)) return make(code);
      if (/disabled/i.test(said)) return make(ctx.kind === 'keys' ? 'VAULT_KEY_DISABLED' : 'VAULT_SECRET_DISABLED');
      if (/not yet valid|before .*nbf|not before/i.test(said)) return make(ctx.kind === 'keys' ? 'VAULT_KEY_NOT_YET_VALID' : 'VAULT_SECRET_NOT_YET_VALID');
      if (/expired/i.test(said)) return make(ctx.kind === 'keys' ? 'VAULT_KEY_EXPIRED' : 'VAULT_SECRET_EXPIRED');
      return make('VAULT_FORBIDDEN');
    case 404:
      return make(ctx.kind === 'keys' ? 'VAULT_KEY_NOT_FOUND' : ctx.kind === 'secrets' ? 'VAULT_SECRET_NOT_FOUND' : 'VAULT_NOT_FOUND');
    case 409:
      if (has('ObjectIsDeletedButRecoverable')) return make('VAULT_DELETED');
      return make('VAULT_CONFLICT');
    case 413:
      return make('VAULT_VALUE_TOO_LARGE');
    default:
      if (status === 429 || status >= 500) return make('VAULT_UNREACHABLE');
      return make('VAULT_BAD_ARGUMENT');
  }
}
