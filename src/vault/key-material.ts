/**
 * Vault key material and the wrap/unwrap operations done with it. Material is
 * PKCS#8 DER for RSA and the 32 raw bytes for oct keys; it stays inside the
 * vault: only publicJwk() output leaves.
 */
import {
  constants, createCipheriv, createHash, createDecipheriv, createPrivateKey, createPublicKey, generateKeyPair, privateDecrypt, publicEncrypt, randomBytes,
  type KeyObject,
} from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';
import { promisify } from 'node:util';
import { VaultError } from './errors.js';
import type { KeyType, PublicJwk, WrapAlgorithm } from './types.js';

const generateKeyPairAsync = promisify(generateKeyPair);
export const RSA_SIZES = [2048, 3072, 4096] as const;
export const OCT_SIZE = 256;
// RFC 3394 §2.2.3.1 default initial value.
const AES_KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
const KEY_OPS = ['wrapKey', 'unwrapKey'] as const;

export interface KeyMaterial {
  readonly kty: KeyType;
  readonly size: number;
  readonly material: Buffer;
}

/** A fresh key of the given type and size. */
export async function generateKeyMaterial(kty: KeyType, size: number | undefined): Promise<KeyMaterial> {
  if (kty === 'RSA') {
    const bits = size ?? 2048;
    if (!(RSA_SIZES as readonly number[]).includes(bits)) throw new VaultError('VAULT_INVALID_KEY', `RSA keys are 2048, 3072 or 4096 bits, not ${bits}`);
    const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: bits, publicExponent: 0x10001 });
    return { kty, size: bits, material: privateKey.export({ format: 'der', type: 'pkcs8' }) };
  }
  if (kty === 'oct') {
    if (size !== undefined && size !== OCT_SIZE) throw new VaultError('VAULT_INVALID_KEY', `oct keys are 256 bits, not ${size}`);
    return { kty, size: OCT_SIZE, material: randomBytes(32) };
  }
  throw new VaultError('VAULT_INVALID_KEY', `unsupported key type ${JSON.stringify(kty)}; RSA or oct`);
}

/** Validate a private RSA JWK or a 256-bit oct JWK and turn it into material. */
export function importJwk(jwk: JsonWebKey): KeyMaterial {
  if (jwk === null || typeof jwk !== 'object') throw new VaultError('VAULT_INVALID_KEY', 'a JWK is an object');
  if (jwk.kty === 'oct') {
    if (typeof jwk.k !== 'string') throw new VaultError('VAULT_INVALID_KEY', 'oct JWK without k');
    const k = Buffer.from(jwk.k, 'base64url');
    if (k.length !== 32) {
      k.fill(0);
      throw new VaultError('VAULT_INVALID_KEY', `oct keys are 256 bits; this JWK's k is ${k.length * 8}`);
    }
    return { kty: 'oct', size: OCT_SIZE, material: k };
  }
  if (jwk.kty === 'RSA') {
    for (const f of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) {
      if (typeof jwk[f] !== 'string') throw new VaultError('VAULT_INVALID_KEY', `RSA JWK without '${f}' (import takes a private key)`);
    }
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: { kty: 'RSA', n: jwk.n, e: jwk.e, d: jwk.d, p: jwk.p, q: jwk.q, dp: jwk.dp, dq: jwk.dq, qi: jwk.qi }, format: 'jwk' });
    } catch (e) {
      throw new VaultError('VAULT_INVALID_KEY', 'the RSA JWK is not a valid private key', { cause: e });
    }
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (!(RSA_SIZES as readonly number[]).includes(bits)) throw new VaultError('VAULT_INVALID_KEY', `RSA keys are 2048, 3072 or 4096 bits, not ${bits}`);
    return { kty: 'RSA', size: bits, material: key.export({ format: 'der', type: 'pkcs8' }) };
  }
  throw new VaultError('VAULT_INVALID_KEY', `unsupported JWK kty ${JSON.stringify(jwk.kty)}; RSA or oct`);
}

/** The public JWK: n and e for RSA, nothing secret for oct. */
export function publicJwk(kid: string, kty: KeyType, material: Buffer): PublicJwk {
  if (kty === 'oct') return { kid, kty, key_ops: [...KEY_OPS] };
  const pub = createPublicKey(rsaPrivate(material)).export({ format: 'jwk' });
  return { kid, kty, key_ops: [...KEY_OPS], n: String(pub.n), e: String(pub.e) };
}

// Parsed RSA keys by the SHA-256 of their PKCS#8 material: OpenSSL 3 takes longer to decode an RSA-2048 key
// than to use it, and a vault server unwraps with the same few keys thousands of times. Bounded; a KeyObject
// lives in OpenSSL's memory until collected either way.
const PARSED_MAX = 32;
const parsed = new Map<string, KeyObject>();

function rsaPrivate(material: Buffer): KeyObject {
  const id = createHash('sha256').update(material).digest('base64');
  let key = parsed.get(id);
  if (key === undefined) {
    key = createPrivateKey({ key: material, format: 'der', type: 'pkcs8' });
    if (parsed.size >= PARSED_MAX) parsed.delete(parsed.keys().next().value!);
    parsed.set(id, key);
  }
  return key;
}

function checkAlg(kty: KeyType, alg: WrapAlgorithm): void {
  const fits = kty === 'RSA' ? alg === 'RSA-OAEP' || alg === 'RSA-OAEP-256' : alg === 'A256KW';
  if (!fits) throw new VaultError('VAULT_UNSUPPORTED_ALGORITHM', `${String(alg)} does not apply to ${kty} keys (RSA: RSA-OAEP, RSA-OAEP-256; oct: A256KW)`);
}

/** RSA-OAEP (SHA-1, RFC 8017 §7.1), RSA-OAEP-256 (SHA-256) or AES key wrap (RFC 3394). */
export function wrapWith(k: KeyMaterial, alg: WrapAlgorithm, plaintext: Uint8Array): Buffer {
  checkAlg(k.kty, alg);
  if (k.kty === 'RSA') {
    const hLen = alg === 'RSA-OAEP' ? 20 : 32;
    const max = k.size / 8 - 2 * hLen - 2;
    if (plaintext.length === 0 || plaintext.length > max) {
      throw new VaultError('VAULT_BAD_ARGUMENT', `${alg} with a ${k.size}-bit key wraps 1-${max} bytes, not ${plaintext.length}`);
    }
    return publicEncrypt(
      { key: createPublicKey(rsaPrivate(k.material)), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP' ? 'sha1' : 'sha256' },
      plaintext,
    );
  }
  if (plaintext.length < 16 || plaintext.length % 8 !== 0) {
    throw new VaultError('VAULT_BAD_ARGUMENT', `A256KW wraps a multiple of 8 bytes, at least 16; not ${plaintext.length}`);
  }
  const c = createCipheriv('id-aes256-wrap', k.material, AES_KW_IV);
  return Buffer.concat([c.update(plaintext), c.final()]);
}

/** The inverse of wrapWith; any failure (wrong key, altered data) is VAULT_UNWRAP_FAILED. */
export function unwrapWith(k: KeyMaterial, alg: WrapAlgorithm, wrapped: Uint8Array): Buffer {
  checkAlg(k.kty, alg);
  if (k.kty === 'RSA') {
    if (wrapped.length !== k.size / 8) throw new VaultError('VAULT_UNWRAP_FAILED', `${alg} data for a ${k.size}-bit key is ${k.size / 8} bytes, not ${wrapped.length}`);
    try {
      return privateDecrypt(
        { key: rsaPrivate(k.material), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP' ? 'sha1' : 'sha256' },
        wrapped,
      );
    } catch (e) {
      throw new VaultError('VAULT_UNWRAP_FAILED', `${alg} unwrap failed: wrong key or altered data`, { cause: e });
    }
  }
  if (wrapped.length < 24 || wrapped.length % 8 !== 0) {
    throw new VaultError('VAULT_UNWRAP_FAILED', `A256KW data is a multiple of 8 bytes, at least 24; not ${wrapped.length}`);
  }
  // OpenSSL reports the RFC 3394 integrity check failure from update() itself.
  try {
    const d = createDecipheriv('id-aes256-wrap', k.material, AES_KW_IV);
    return Buffer.concat([d.update(wrapped), d.final()]);
  } catch (e) {
    throw new VaultError('VAULT_UNWRAP_FAILED', 'A256KW unwrap failed its integrity check: wrong key or altered data', { cause: e });
  }
}
