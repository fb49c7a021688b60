/**
 * Making a key-encryption key inside a token: AES-256 (CKM_AES_KEY_GEN) or an RSA-3072 pair
 * (CKM_RSA_PKCS_KEY_PAIR_GEN, e = 65537), stored on the token, private, with CKA_SENSITIVE true and
 * CKA_EXTRACTABLE false unless asked otherwise, so its value can never be read or wrapped out of the token.
 * Usages are limited to what a KEK does: wrap/unwrap (AES) and encrypt/decrypt plus wrap/unwrap (RSA).
 */
import { randomBytes } from 'node:crypto';
import { Pkcs11Error } from './errors.js';
import { attributesOf, findKek, withToken, type KeyAttributes } from './token.js';
import { formatPkcs11Uri, parsePkcs11Uri } from './uri.js';
import type { Pkcs11Access } from './access.js';

export const KEYGEN_TYPES = ['aes256', 'rsa3072'] as const;
export type KeygenType = (typeof KEYGEN_TYPES)[number];

export interface KeygenRequest {
  /** A URI naming the token (pkcs11:token=NAME), or the bare token label. */
  readonly token: string;
  readonly label: string;
  readonly type: KeygenType;
  readonly allowExtractable?: boolean;
  readonly access?: Pkcs11Access;
}

export interface KeygenResult {
  /** The URI of the new key (pkcs11:token=...;object=...). */
  readonly uri: string;
  readonly id: string;
  readonly attributes: KeyAttributes;
}

export async function generateTokenKey(req: KeygenRequest): Promise<KeygenResult> {
  if (!(KEYGEN_TYPES as readonly string[]).includes(req.type)) throw new Pkcs11Error('PKCS11_MECHANISM_UNSUPPORTED', `key type is ${KEYGEN_TYPES.join(' or ')}, not ${JSON.stringify(String(req.type).slice(0, 20))}`);
  if (typeof req.label !== 'string' || req.label === '' || Buffer.byteLength(req.label) > 128) throw new Pkcs11Error('PKCS11_BAD_URI', 'a key label is 1-128 bytes');
  const tokenUri = parsePkcs11Uri(req.token.startsWith('pkcs11:') ? req.token : formatPkcs11Uri({ token: req.token }));
  if (tokenUri.object !== undefined || tokenUri.id !== undefined) throw new Pkcs11Error('PKCS11_BAD_URI', '--token names the token only; the key is named by --label');
  const extractable = req.allowExtractable === true;
  const id = randomBytes(16);
  return withToken(tokenUri, req.access, { login: true, rw: true }, (t) => {
    const { lib, p11, session } = t;
    const label = Buffer.from(req.label, 'utf8');
    for (const cls of [lib.CKO_SECRET_KEY, lib.CKO_PRIVATE_KEY, lib.CKO_PUBLIC_KEY]) {
      if (t.find({ text: '', object: req.label }, cls).length) throw new Pkcs11Error('PKCS11_KEY_EXISTS', `token "${t.label}" already holds a key labelled "${req.label}"`);
    }
    const common = [
      { type: lib.CKA_TOKEN, value: true },
      { type: lib.CKA_LABEL, value: label },
      { type: lib.CKA_ID, value: id },
    ];
    const secretAttrs = [
      { type: lib.CKA_PRIVATE, value: true },
      { type: lib.CKA_SENSITIVE, value: true },
      { type: lib.CKA_EXTRACTABLE, value: extractable },
    ];
    let key: Buffer;
    let kind: 'aes' | 'rsa';
    if (req.type === 'aes256') {
      kind = 'aes';
      key = p11.C_GenerateKey(session, { mechanism: lib.CKM_AES_KEY_GEN }, [
        ...common, ...secretAttrs,
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_VALUE_LEN, value: 32 },
        { type: lib.CKA_WRAP, value: true },
        { type: lib.CKA_UNWRAP, value: true },
        { type: lib.CKA_ENCRYPT, value: false },
        { type: lib.CKA_DECRYPT, value: false },
        { type: lib.CKA_SIGN, value: false },
        { type: lib.CKA_VERIFY, value: false },
      ]);
    } else {
      kind = 'rsa';
      key = p11.C_GenerateKeyPair(session, { mechanism: lib.CKM_RSA_PKCS_KEY_PAIR_GEN }, [
        ...common,
        { type: lib.CKA_CLASS, value: lib.CKO_PUBLIC_KEY },
        { type: lib.CKA_MODULUS_BITS, value: 3072 },
        { type: lib.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
        { type: lib.CKA_ENCRYPT, value: true },
        { type: lib.CKA_WRAP, value: true },
        { type: lib.CKA_VERIFY, value: false },
      ], [
        ...common, ...secretAttrs,
        { type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY },
        { type: lib.CKA_DECRYPT, value: true },
        { type: lib.CKA_UNWRAP, value: true },
        { type: lib.CKA_SIGN, value: false },
      ]).privateKey;
    }
    const attributes = attributesOf(t, kind, key);
    return { uri: formatPkcs11Uri({ token: t.label, object: req.label }), id: id.toString('hex'), attributes };
  });
}

/** The export-relevant attributes of the key a URI names (pkcs11 show; tests). */
export async function tokenKeyAttributes(uri: string, access: Pkcs11Access | undefined): Promise<KeyAttributes & { token: string }> {
  return withToken(uri, access, { login: true }, (t, u) => {
    const k = findKek(t, u);
    return { ...attributesOf(t, k.kind, k.key), token: t.label };
  });
}
