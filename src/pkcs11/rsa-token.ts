/**
 * The token side of systemd-cryptenroll's systemd-pkcs11 LUKS2 token: the public key a secret is encrypted to
 * (the certificate's, as systemd-cryptenroll reads it, else the public key object's), and the decryption of
 * that secret by the private key with CKM_RSA_PKCS (RSAES-PKCS1-v1_5, RFC 8017 §7.2), which is what
 * systemd-cryptsetup does at unlock (src/shared/pkcs11-util.c, pkcs11_token_decrypt_data).
 */
import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { Pkcs11Error } from './errors.js';
import { findKek, tokenError, withToken } from './token.js';
import type { Pkcs11Access } from './access.js';

/** The RSA public key of the pair the URI names (no login needed: certificates and public keys are public). */
export async function tokenPublicKey(uri: string, access: Pkcs11Access | undefined): Promise<KeyObject> {
  return withToken(uri, access, { login: false }, (t, u) => {
    const { lib } = t;
    const certs = t.find({ ...u, type: undefined }, lib.CKO_CERTIFICATE);
    if (certs.length > 1) throw new Pkcs11Error('PKCS11_AMBIGUOUS', `${certs.length} certificates on token "${t.label}" match ${u.text.slice(0, 300)}; add object= or id=`);
    if (certs[0]) {
      const der = t.bytes(certs[0], lib.CKA_VALUE);
      if (!der) throw new Pkcs11Error('PKCS11_BAD_CERTIFICATE', `the certificate on token "${t.label}" has no value`);
      return certificateKey(der, `the certificate on token "${t.label}"`);
    }
    const pubs = t.find({ ...u, type: undefined }, lib.CKO_PUBLIC_KEY);
    if (pubs.length > 1) throw new Pkcs11Error('PKCS11_AMBIGUOUS', `${pubs.length} public keys on token "${t.label}" match ${u.text.slice(0, 300)}; add object= or id=`);
    if (!pubs[0]) throw new Pkcs11Error('PKCS11_KEY_NOT_FOUND', `no certificate or public key on token "${t.label}" matches ${u.text.slice(0, 300)} (or give --pkcs11-cert)`);
    const n = t.bytes(pubs[0], lib.CKA_MODULUS);
    const e = t.bytes(pubs[0], lib.CKA_PUBLIC_EXPONENT);
    if (!n || !e) throw new Pkcs11Error('PKCS11_KEY_NOT_FOUND', `the public key on token "${t.label}" is not an RSA key`);
    return createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' });
  });
}

/** The RSA public key of an X.509 certificate (DER or PEM). */
export function certificateKey(cert: Buffer, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = new X509Certificate(cert).publicKey;
  } catch (e) {
    throw new Pkcs11Error('PKCS11_BAD_CERTIFICATE', `${what} is not an X.509 certificate`, { cause: e });
  }
  if (key.asymmetricKeyType !== 'rsa') throw new Pkcs11Error('PKCS11_BAD_CERTIFICATE', `${what} holds a ${String(key.asymmetricKeyType)} key; a systemd-pkcs11 token needs RSA`);
  return key;
}

/** CKM_RSA_PKCS decryption by the private key the URI names; the caller wipes the result. */
export async function decryptPkcs1InToken(uri: string, data: Uint8Array, access: Pkcs11Access | undefined): Promise<Uint8Array> {
  return withToken(uri, access, { login: true }, (t, u) => {
    const { lib, p11, session } = t;
    // systemd stores the URI it was given (type=cert in older enrolments): the private key of the pair decrypts.
    const kek = findKek(t, { ...u, type: u.type === 'secret-key' ? u.type : 'private' });
    if (kek.kind !== 'rsa') throw new Pkcs11Error('PKCS11_KEY_NOT_FOUND', `${u.text.slice(0, 300)} names no RSA private key`);
    const buf = Buffer.alloc(data.length);
    try {
      p11.C_DecryptInit(session, { mechanism: lib.CKM_RSA_PKCS }, kek.key);
      const out = Uint8Array.from(p11.C_Decrypt(session, Buffer.from(data), buf));
      return out;
    } catch (e) {
      throw tokenError(e, `CKM_RSA_PKCS decryption on token "${t.label}" (wrong key for this token's pkcs11-key?)`, 'PKCS11_UNWRAP_FAILED');
    } finally {
      buf.fill(0);
    }
  });
}
