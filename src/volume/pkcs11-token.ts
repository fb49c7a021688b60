/**
 * systemd-cryptenroll's `systemd-pkcs11` LUKS2 token, written and read bit-compatibly (systemd v252,
 * src/cryptenroll/cryptenroll-pkcs11.c and src/shared/pkcs11-util.c; facts checked against Debian's systemd 252
 * enrolling an image file):
 * - a random secret of (RSA modulus bytes / 2) bytes, encrypted to the token's RSA public key (its certificate,
 *   or the public key object) with RSAES-PKCS1-v1_5 (RFC 8017 §7.2), which is all systemd offers;
 * - the keyslot's passphrase is base64(secret) (RFC 4648 §4, padded), and the keyslot uses PBKDF2-SHA512 with
 *   1000 iterations (cryptsetup_set_minimal_pbkdf), the AF hash following it;
 * - the token: {"type":"systemd-pkcs11","keyslots":["N"],"pkcs11-uri":URI,"pkcs11-key":base64(encrypted)}.
 * Enrolling needs only the public key, so with a certificate file no token is touched; opening decrypts the
 * pkcs11-key inside the token with CKM_RSA_PKCS (the PIN is needed then).
 */
import { constants, publicEncrypt, randomFillSync, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { JsonObject, KdfOptions, LuksVolumeInfo } from '../luks/index.js';
import { Pkcs11Error, certificateKey, decryptPkcs1InToken, parsePkcs11Uri, tokenPublicKey, type Pkcs11Access } from '../pkcs11/index.js';

export const SYSTEMD_PKCS11_TOKEN = 'systemd-pkcs11';
/** cryptsetup_set_minimal_pbkdf in systemd: the secret is random, so the KDF adds nothing but time. */
export const KDF_SYSTEMD_PKCS11: KdfOptions = { type: 'pbkdf2', hash: 'sha512', iterations: 1000 };
/** RSA moduli systemd's secrets are sized from; smaller ones give secrets too short to be keys. */
const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 16384;

export interface Pkcs11Enrollment {
  /** The PKCS#11 URI of the token key (private key, or its certificate) the secret is encrypted to. */
  readonly uri: string;
  /** PEM or DER X.509 certificate of that key: enrol without touching the token. */
  readonly certFile?: string;
  /** Module and PIN, when the public key is read from the token. */
  readonly access?: Pkcs11Access;
}

export interface PreparedPkcs11Keyslot {
  /** The keyslot passphrase, base64(secret) as ASCII bytes: the caller adds the keyslot with it and wipes it. */
  readonly passphrase: Uint8Array;
  /** The token JSON for the keyslot that passphrase opens. */
  token(keyslot: number): JsonObject;
}

/** base64 of `raw` (RFC 4648 §4, padded) as ASCII bytes, written byte by byte so no string copy of the secret is left. */
export function base64Bytes(raw: Uint8Array): Uint8Array {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const out = new Uint8Array(Math.ceil(raw.length / 3) * 4);
  for (let i = 0, o = 0; i < raw.length; i += 3, o += 4) {
    const n = raw.length - i;
    const b = (raw[i]! << 16) | ((n > 1 ? raw[i + 1]! : 0) << 8) | (n > 2 ? raw[i + 2]! : 0);
    out[o] = A.charCodeAt((b >> 18) & 63);
    out[o + 1] = A.charCodeAt((b >> 12) & 63);
    out[o + 2] = n > 1 ? A.charCodeAt((b >> 6) & 63) : 0x3d;
    out[o + 3] = n > 2 ? A.charCodeAt(b & 63) : 0x3d;
  }
  return out;
}

async function publicKeyFor(e: Pkcs11Enrollment): Promise<KeyObject> {
  if (e.certFile !== undefined) return certificateKey(await readFile(e.certFile), `certificate ${e.certFile}`);
  return tokenPublicKey(e.uri, e.access);
}

/** A new secret encrypted to the token's key, and the passphrase and token that go with it. */
export async function preparePkcs11Keyslot(e: Pkcs11Enrollment): Promise<PreparedPkcs11Keyslot> {
  // Checked (a PIN in the URI refused) before anything is written: the URI lands in the header as given.
  parsePkcs11Uri(e.uri);
  const key = await publicKeyFor(e);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) {
    throw new Pkcs11Error('PKCS11_BAD_CERTIFICATE', `a systemd-pkcs11 token needs an RSA key of ${MIN_RSA_BITS}-${MAX_RSA_BITS} bits, not ${bits}`);
  }
  const secret = randomFillSync(new Uint8Array(bits / 16));
  try {
    const encrypted = publicEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, secret);
    const passphrase = base64Bytes(secret);
    return {
      passphrase,
      token: (keyslot) => ({ type: SYSTEMD_PKCS11_TOKEN, keyslots: [String(keyslot)], 'pkcs11-uri': e.uri, 'pkcs11-key': encrypted.toString('base64') }),
    };
  } finally {
    secret.fill(0);
  }
}

export interface SystemdPkcs11Token {
  readonly uri: string;
  readonly key: Buffer;
  readonly keyslot: number | null;
}

/** The systemd-pkcs11 tokens of a header whose fields are well formed (others are left for cryptsetup to judge). */
export function systemdPkcs11TokensOf(info: LuksVolumeInfo): SystemdPkcs11Token[] {
  const out: SystemdPkcs11Token[] = [];
  for (const t of info.tokens) {
    if (t.type !== SYSTEMD_PKCS11_TOKEN) continue;
    const uri = t.json['pkcs11-uri'];
    const key = t.json['pkcs11-key'];
    if (typeof uri !== 'string' || typeof key !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(key) || key.length > 4096) continue;
    out.push({ uri, key: Buffer.from(key, 'base64'), keyslot: t.keyslots[0] ?? null });
  }
  return out;
}

/** The keyslot passphrase a systemd-pkcs11 token holds, decrypted in the token; the caller wipes it. */
export async function pkcs11TokenPassphrase(t: SystemdPkcs11Token, access: Pkcs11Access | undefined): Promise<Uint8Array> {
  const secret = await decryptPkcs1InToken(t.uri, t.key, access);
  try {
    return base64Bytes(secret);
  } finally {
    secret.fill(0);
  }
}
