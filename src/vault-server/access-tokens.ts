/**
 * Access tokens as Microsoft Entra issues them for the client-credentials grant: JWTs (RFC 7519) signed ES256
 * (RFC 7518 §3.4: ECDSA P-256 with SHA-256, the signature as R || S) by a key the server keeps in
 * `<vault dir>/server/token-signing.key` (0600), so tokens outlive a restart. `aud` is the vault resource the
 * token was asked for, `exp` at most an hour away; `ctag` ties the token to the principal's current credentials.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, verify, type KeyObject } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const MAX_TOKEN_LIFETIME_S = 3600;
// Longest bearer token looked at; ours are about 600 characters.
const MAX_TOKEN_CHARS = 4096;
// Verified tokens remembered, so a keep-alive client's requests skip the ECDSA verification.
const CACHE_ENTRIES = 10_000;
// Clock skew allowed on nbf.
const SKEW_S = 60;

export interface TokenClaims {
  readonly aud: string;
  readonly iss: string;
  readonly iat: number;
  readonly nbf: number;
  readonly exp: number;
  readonly tid: string;
  readonly appid: string;
  readonly oid: string;
  readonly sub: string;
  readonly ctag: string;
}

export type TokenCheck = { ok: true; claims: TokenClaims } | { ok: false; reason: 'malformed' | 'signature' | 'expired' | 'audience' };

function b64json(o: unknown): string {
  return Buffer.from(JSON.stringify(o), 'utf8').toString('base64url');
}

/** Load the signing key, creating it (0600) on first use. */
function signingKey(dir: string): KeyObject {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, 'token-signing.key');
  try {
    return createPrivateKey(readFileSync(path));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const pem = String(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
  try {
    const fd = openSync(path, 'wx', 0o600);
    try {
      writeSync(fd, pem);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    // Another server on this vault made it first: use that one.
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return createPrivateKey(readFileSync(path));
}

export class TokenAuthority {
  readonly #key: KeyObject;
  readonly #public: KeyObject;
  readonly kid: string;
  readonly #cache = new Map<string, TokenClaims>();

  constructor(serverDir: string) {
    this.#key = signingKey(serverDir);
    this.#public = createPublicKey(this.#key);
    const jwk = this.#public.export({ format: 'jwk' });
    this.kid = Buffer.from(`${jwk.x}.${jwk.y}`).toString('base64url').slice(0, 27);
  }

  /** The public key as a JWK set (the jwks_uri document). */
  jwks(): { keys: object[] } {
    return { keys: [{ ...this.#public.export({ format: 'jwk' }), kid: this.kid, use: 'sig', alg: 'ES256' }] };
  }

  issue(c: Omit<TokenClaims, 'iat' | 'nbf' | 'exp'>, lifetimeS: number): { token: string; expiresIn: number } {
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = Math.min(Math.max(1, Math.floor(lifetimeS)), MAX_TOKEN_LIFETIME_S);
    const claims = { ...c, iat: now, nbf: now, exp: now + expiresIn, ver: '2.0', idtyp: 'app', uti: randomUUID() };
    const input = `${b64json({ typ: 'JWT', alg: 'ES256', kid: this.kid })}.${b64json(claims)}`;
    const sig = sign('sha256', Buffer.from(input), { key: this.#key, dsaEncoding: 'ieee-p1363' });
    return { token: `${input}.${sig.toString('base64url')}`, expiresIn };
  }

  /** Check a bearer token's form, signature, lifetime and audience (`aud` must be `audience`). */
  check(token: string, audience: string): TokenCheck {
    const now = Math.floor(Date.now() / 1000);
    let claims = this.#cache.get(token);
    if (claims === undefined) {
      if (token.length > MAX_TOKEN_CHARS) return { ok: false, reason: 'malformed' };
      const parts = token.split('.');
      if (parts.length !== 3 || !parts.every((p) => /^[A-Za-z0-9_-]+$/.test(p))) return { ok: false, reason: 'malformed' };
      let header: { alg?: unknown };
      let body: Partial<TokenClaims>;
      try {
        header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as { alg?: unknown };
        body = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Partial<TokenClaims>;
      } catch {
        return { ok: false, reason: 'malformed' };
      }
      // The algorithm is fixed, never taken from the header (RFC 8725 §3.1).
      if (header === null || typeof header !== 'object' || header.alg !== 'ES256' || body === null || typeof body !== 'object') return { ok: false, reason: 'malformed' };
      const good = verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key: this.#public, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2]!, 'base64url'));
      if (!good) return { ok: false, reason: 'signature' };
      if (typeof body.exp !== 'number' || typeof body.nbf !== 'number' || typeof body.aud !== 'string' || typeof body.oid !== 'string' || typeof body.ctag !== 'string') {
        return { ok: false, reason: 'malformed' };
      }
      claims = body as TokenClaims;
      if (this.#cache.size >= CACHE_ENTRIES) this.#cache.clear();
      this.#cache.set(token, claims);
    }
    if (now >= claims.exp || now + SKEW_S < claims.nbf) {
      this.#cache.delete(token);
      return { ok: false, reason: 'expired' };
    }
    if (claims.aud !== audience) return { ok: false, reason: 'audience' };
    return { ok: true, claims };
  }
}
