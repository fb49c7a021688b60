/**
 * Disk secrets wrapped by a key that lives in a token: the wrap and the unwrap happen inside the token.
 *
 * Mechanisms, in order of preference:
 * - AES KEK: AES key wrap with padding (RFC 5649): CKM_AES_KEY_WRAP_PAD (0x210A, the v2.40 name SoftHSM 2.6
 *   implements) or CKM_AES_KEY_WRAP_KWP (0x210B, PKCS#11 v3.0). The secret is wrapped as a session-only generic
 *   secret object (C_WrapKey) and unwrapped into one whose value is read back (C_UnwrapKey). It is first padded
 *   to a multiple of 8 bytes (ISO/IEC 7816-4: 0x80 then zeros), because SoftHSM zero-pads other lengths before
 *   wrapping and so returns a longer value (SoftHSMv2#726); the padding makes every token return the same bytes.
 * - RSA KEK: RSA-OAEP (RFC 8017 §7.1) with SHA-256, else with SHA-1 (SoftHSM 2.6 offers only SHA-1 OAEP and
 *   answers SHA-256 with CKR_ARGUMENTS_BAD); RSA PKCS#1 v1.5 (RFC 8017 §7.2) only when the token offers no OAEP,
 *   with a warning, because v1.5 decryption is open to padding-oracle attacks. Encrypt with the public key,
 *   decrypt with the private key (C_Encrypt, C_Decrypt).
 * Every wrap is unwrapped again in the token and compared before it is used, so a mechanism a token accepts but
 * mis-implements is never the one a disk depends on.
 */
import { timingSafeEqual } from 'node:crypto';
import { Pkcs11Error } from './errors.js';
import {
  attributesOf, checkNotExportable, ckrOf, findKek, tokenError, withToken, type KekKind, type TokenSession,
} from './token.js';
import type { Pkcs11Access } from './access.js';
import type { Pkcs11Uri } from './uri.js';

export const PKCS11_MECHANISMS = [
  'CKM_AES_KEY_WRAP_PAD', 'CKM_AES_KEY_WRAP_KWP', 'CKM_RSA_PKCS_OAEP-SHA256', 'CKM_RSA_PKCS_OAEP-SHA1', 'CKM_RSA_PKCS',
] as const;
export type Pkcs11Mechanism = (typeof PKCS11_MECHANISMS)[number];
/** PKCS#11 v3.0 §2.14.3 CKM_AES_KEY_WRAP_KWP (pkcs11js 2.1.7 predates it). */
const CKM_AES_KEY_WRAP_KWP = 0x210b;
/** RFC 8017 §A.2.1 pSourceAlgorithm id-pSpecified (CKZ_DATA_SPECIFIED), with an empty label. */
const CKZ_DATA_SPECIFIED = 1;
/** Longest secret this wraps (a vault passphrase is 44 bytes, a plain volume key 64). */
const MAX_SECRET_BYTES = 512;

export interface Pkcs11WrapOptions {
  readonly access?: Pkcs11Access;
  /** Use a KEK that could leave the token (CKA_EXTRACTABLE true or CKA_SENSITIVE false). */
  readonly allowExtractable?: boolean;
  /** Told when the token offers no better mechanism than RSA PKCS#1 v1.5. */
  readonly onWarning?: (message: string) => void;
}

export interface Pkcs11Wrapped {
  readonly mechanism: Pkcs11Mechanism;
  readonly wrapped: Buffer;
  /** The token's label (reports only). */
  readonly token: string;
}

function isMechanism(m: unknown): m is Pkcs11Mechanism {
  return typeof m === 'string' && (PKCS11_MECHANISMS as readonly string[]).includes(m);
}

/** ISO/IEC 7816-4 padding to a multiple of 8 bytes (at least 16, RFC 5649's smallest useful input). */
function pad7816(m: Uint8Array): Buffer {
  const n = Math.max(16, Math.ceil((m.length + 1) / 8) * 8);
  const out = Buffer.alloc(n);
  out.set(m);
  out[m.length] = 0x80;
  return out;
}

function unpad7816(b: Buffer): Buffer | null {
  let i = b.length - 1;
  while (i >= 0 && b[i] === 0) i--;
  return i >= 0 && b[i] === 0x80 ? b.subarray(0, i) : null;
}

function mechanismOf(t: TokenSession, m: Pkcs11Mechanism): { mechanism: number; parameter?: unknown } {
  const { lib } = t;
  switch (m) {
    case 'CKM_AES_KEY_WRAP_PAD': return { mechanism: lib.CKM_AES_KEY_WRAP_PAD };
    case 'CKM_AES_KEY_WRAP_KWP': return { mechanism: CKM_AES_KEY_WRAP_KWP };
    case 'CKM_RSA_PKCS': return { mechanism: lib.CKM_RSA_PKCS };
    case 'CKM_RSA_PKCS_OAEP-SHA256':
      return { mechanism: lib.CKM_RSA_PKCS_OAEP, parameter: { type: lib.CK_PARAMS_RSA_OAEP, hashAlg: lib.CKM_SHA256, mgf: lib.CKG_MGF1_SHA256, source: CKZ_DATA_SPECIFIED } };
    case 'CKM_RSA_PKCS_OAEP-SHA1':
      return { mechanism: lib.CKM_RSA_PKCS_OAEP, parameter: { type: lib.CK_PARAMS_RSA_OAEP, hashAlg: lib.CKM_SHA_1, mgf: lib.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED } };
  }
}

/** The mechanisms to try for a KEK kind, best first, among those the token lists. */
function candidates(t: TokenSession, kind: KekKind): Pkcs11Mechanism[] {
  const { lib } = t;
  if (kind === 'aes') {
    return (['CKM_AES_KEY_WRAP_PAD', 'CKM_AES_KEY_WRAP_KWP'] as const).filter((m) => t.hasMechanism(mechanismOf(t, m).mechanism));
  }
  const oaep = t.hasMechanism(lib.CKM_RSA_PKCS_OAEP) ? (['CKM_RSA_PKCS_OAEP-SHA256', 'CKM_RSA_PKCS_OAEP-SHA1'] as const) : [];
  return oaep.length ? [...oaep] : t.hasMechanism(lib.CKM_RSA_PKCS) ? ['CKM_RSA_PKCS'] : [];
}

type Mech = Parameters<TokenSession['p11']['C_WrapKey']>[1];

/** One mechanism's wrap in the token; null when the token refuses the mechanism or its parameters. */
function wrapOnce(t: TokenSession, kek: ReturnType<typeof findKek>, m: Pkcs11Mechanism, material: Uint8Array): Buffer | null {
  const { lib, p11, session } = t;
  const mech = mechanismOf(t, m) as Mech;
  try {
    if (kek.kind === 'aes') {
      const framed = pad7816(material);
      let obj: Buffer | null = null;
      try {
        obj = p11.C_CreateObject(session, [
          { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
          { type: lib.CKA_KEY_TYPE, value: lib.CKK_GENERIC_SECRET },
          { type: lib.CKA_TOKEN, value: false },
          { type: lib.CKA_SENSITIVE, value: false },
          { type: lib.CKA_EXTRACTABLE, value: true },
          { type: lib.CKA_VALUE, value: framed },
        ]);
        return Buffer.from(p11.C_WrapKey(session, mech, kek.key, obj, Buffer.alloc(framed.length + 16)));
      } finally {
        framed.fill(0);
        if (obj) p11.C_DestroyObject(session, obj);
      }
    }
    if (!kek.publicKey) {
      throw new Pkcs11Error('PKCS11_KEY_NOT_FOUND', `token "${t.label}" holds the RSA private key but no public key object beside it (same label and id) to wrap with`);
    }
    p11.C_EncryptInit(session, mech, kek.publicKey);
    return Buffer.from(p11.C_Encrypt(session, Buffer.from(material), Buffer.alloc(1024)));
  } catch (e) {
    const ckr = ckrOf(e);
    if (ckr === 'CKR_MECHANISM_INVALID' || ckr === 'CKR_MECHANISM_PARAM_INVALID' || ckr === 'CKR_ARGUMENTS_BAD') return null;
    throw e;
  }
}

/** One mechanism's unwrap in the token; the result is this module's allocation, handed to the caller. */
function unwrapOnce(t: TokenSession, kek: ReturnType<typeof findKek>, m: Pkcs11Mechanism, wrapped: Buffer): Buffer {
  const { lib, p11, session } = t;
  const mech = mechanismOf(t, m) as Mech;
  try {
    if (kek.kind === 'aes') {
      const obj = p11.C_UnwrapKey(session, mech, kek.key, wrapped, [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_GENERIC_SECRET },
        { type: lib.CKA_TOKEN, value: false },
        { type: lib.CKA_SENSITIVE, value: false },
        { type: lib.CKA_EXTRACTABLE, value: true },
      ]);
      let value: Buffer | null = null;
      try {
        value = t.bytes(obj, lib.CKA_VALUE);
      } finally {
        p11.C_DestroyObject(session, obj);
      }
      const plain = value ? unpad7816(value) : null;
      if (!plain) {
        value?.fill(0);
        throw new Pkcs11Error('PKCS11_UNWRAP_FAILED', `the data unwrapped by token "${t.label}" is not a padded secret (wrong key or altered data)`);
      }
      const out = Buffer.from(plain);
      value!.fill(0);
      return out;
    }
    p11.C_DecryptInit(session, mech, kek.key);
    const buf = Buffer.alloc(wrapped.length);
    const plain = p11.C_Decrypt(session, wrapped, buf);
    const out = Buffer.from(plain);
    buf.fill(0);
    return out;
  } catch (e) {
    if (e instanceof Pkcs11Error) throw e;
    const ckr = ckrOf(e);
    // Wrong key or altered data: the token's integrity check (RFC 5649 §3) or the padding check fails.
    if (ckr === 'CKR_WRAPPED_KEY_INVALID' || ckr === 'CKR_ENCRYPTED_DATA_INVALID' || ckr === 'CKR_ENCRYPTED_DATA_LEN_RANGE'
      || ckr === 'CKR_WRAPPED_KEY_LEN_RANGE' || ckr === 'CKR_GENERAL_ERROR' || ckr === 'CKR_FUNCTION_FAILED') {
      throw new Pkcs11Error('PKCS11_UNWRAP_FAILED', `token "${t.label}" could not unwrap with ${m} (${ckr}): wrong key or altered data`, { cause: e });
    }
    throw tokenError(e, `${m} unwrap on token "${t.label}"`);
  }
}

/** Wrap `material` (never wiped here: the caller's) under the token key `uri` names. */
export async function wrapWithToken(uri: string | Pkcs11Uri, material: Uint8Array, o: Pkcs11WrapOptions = {}): Promise<Pkcs11Wrapped> {
  if (!(material instanceof Uint8Array) || material.length === 0 || material.length > MAX_SECRET_BYTES) {
    throw new Pkcs11Error('PKCS11_FAILED', `a token wraps 1-${MAX_SECRET_BYTES} bytes here`);
  }
  let warning: string | null = null;
  const r = await withToken(uri, o.access, { login: true }, (t, u) => {
    const kek = findKek(t, u);
    checkNotExportable(t.label, u, attributesOf(t, kek.kind, kek.key), o.allowExtractable ?? false);
    const tried: string[] = [];
    for (const m of candidates(t, kek.kind)) {
      const wrapped = wrapOnce(t, kek, m, material);
      if (!wrapped) {
        tried.push(`${m} (refused)`);
        continue;
      }
      let back: Buffer | null = null;
      try {
        back = unwrapOnce(t, kek, m, wrapped);
        if (back.length !== material.length || !timingSafeEqual(back, material)) {
          tried.push(`${m} (did not round-trip)`);
          continue;
        }
      } catch (e) {
        if (!(e instanceof Pkcs11Error) || e.code !== 'PKCS11_UNWRAP_FAILED') throw e;
        tried.push(`${m} (did not round-trip)`);
        continue;
      } finally {
        back?.fill(0);
      }
      if (m === 'CKM_RSA_PKCS') warning = `token "${t.label}" offers no RSA-OAEP: the disk secret is wrapped with RSA PKCS#1 v1.5, the last resort (open to padding-oracle attacks on the token)`;
      return { mechanism: m, wrapped, token: t.label };
    }
    throw new Pkcs11Error('PKCS11_MECHANISM_UNSUPPORTED', `token "${t.label}" offers no wrap mechanism for its ${kek.kind === 'aes' ? 'AES' : 'RSA'} key ${u.text.slice(0, 300)} (wanted ${kek.kind === 'aes' ? 'CKM_AES_KEY_WRAP_PAD or _KWP' : 'CKM_RSA_PKCS_OAEP or CKM_RSA_PKCS'}${tried.length ? `; tried ${tried.join(', ')}` : ''})`);
  });
  if (warning !== null) o.onWarning?.(warning);
  return r;
}

/** Unwrap in the token; the caller wipes the result. */
export async function unwrapWithToken(uri: string | Pkcs11Uri, mechanism: string, wrapped: Uint8Array, o: Pick<Pkcs11WrapOptions, 'access'> = {}): Promise<Uint8Array> {
  if (!isMechanism(mechanism)) throw new Pkcs11Error('PKCS11_MECHANISM_UNSUPPORTED', `unknown wrap mechanism ${JSON.stringify(String(mechanism).slice(0, 60))}`);
  return withToken(uri, o.access, { login: true }, (t, u) => {
    const kek = findKek(t, u);
    const aes = mechanism.startsWith('CKM_AES');
    if ((kek.kind === 'aes') !== aes) throw new Pkcs11Error('PKCS11_UNWRAP_FAILED', `${mechanism} does not apply to the ${kek.kind === 'aes' ? 'AES' : 'RSA'} key ${u.text.slice(0, 300)}`);
    return unwrapOnce(t, kek, mechanism, Buffer.from(wrapped));
  });
}

export { isMechanism as isPkcs11Mechanism };
