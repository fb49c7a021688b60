/**
 * A session with one token through its PKCS#11 module (OASIS PKCS#11 v2.40 base specification), by pkcs11js.
 *
 * pkcs11js is an optional dependency with a native part built at install: it is imported on the first PKCS#11
 * request only, so a machine where it could not be built runs everything else, and a PKCS#11 request there is
 * PKCS11_UNAVAILABLE saying why. Each request loads the module, initialises it, opens a session on the one
 * token the URI names, logs in, does its work and finalises, all synchronously between two awaits, so two
 * requests of one process never share (or finalise) a module under each other.
 */
import { Pkcs11Error, type Pkcs11ErrorCode } from './errors.js';
import { modulePathOf, pinOf, type Pkcs11Access } from './access.js';
import { parsePkcs11Uri, type ObjectType, type Pkcs11Uri } from './uri.js';

type Lib = typeof import('pkcs11js');
type P11 = InstanceType<Lib['PKCS11']>;
type Handle = Buffer;

let loading: Promise<Lib> | null = null;

/** pkcs11js, imported once; its absence or a failed native build is PKCS11_UNAVAILABLE with the loader's reason. */
export function loadPkcs11js(): Promise<Lib> {
  loading ??= import('pkcs11js').then(
    (m) => ((m as { default?: Lib }).default ?? m) as Lib,
    (e: unknown) => {
      loading = null;
      throw new Pkcs11Error('PKCS11_UNAVAILABLE', `PKCS#11 support is not available: the optional dependency pkcs11js did not load (${String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 300)}); reinstall with a C++ toolchain (node-gyp) so it builds`, { cause: e });
    },
  );
  return loading;
}

/** The CKR_ name of a pkcs11js error, or null when it is not a Cryptoki return value. */
export function ckrOf(e: unknown): string | null {
  const m = /\b(CKR_[A-Z0-9_]+)\b/.exec(String((e as Error)?.message ?? ''));
  return m ? m[1]! : null;
}

/** A Cryptoki failure as a typed error: the CKR_ name says what the token refused. */
export function tokenError(e: unknown, doing: string, fallback: Pkcs11ErrorCode = 'PKCS11_FAILED'): Pkcs11Error {
  if (e instanceof Pkcs11Error) return e;
  const ckr = ckrOf(e);
  const code: Pkcs11ErrorCode = ckr === 'CKR_PIN_INCORRECT' ? 'PKCS11_PIN_INCORRECT'
    : ckr === 'CKR_PIN_LOCKED' ? 'PKCS11_PIN_LOCKED'
      : ckr === 'CKR_MECHANISM_INVALID' || ckr === 'CKR_MECHANISM_PARAM_INVALID' ? 'PKCS11_MECHANISM_UNSUPPORTED'
        : ckr === 'CKR_TOKEN_NOT_PRESENT' || ckr === 'CKR_DEVICE_REMOVED' ? 'PKCS11_TOKEN_NOT_FOUND'
          : fallback;
  return new Pkcs11Error(code, `${doing}: ${ckr ?? String((e as Error)?.message ?? e).slice(0, 200)}`, { cause: e });
}

const trimmed = (s: string): string => s.replace(/[\s\0]+$/, '');

/** One open, logged-in session; only withToken makes one. */
export class TokenSession {
  constructor(
    readonly lib: Lib,
    readonly p11: P11,
    readonly slot: Handle,
    readonly session: Handle,
    readonly label: string,
  ) {}

  private mechs: Set<number> | null = null;

  hasMechanism(m: number): boolean {
    this.mechs ??= new Set(this.p11.C_GetMechanismList(this.slot));
    return this.mechs.has(m);
  }

  /** Objects of `cls` matching the URI's object label and id. */
  find(uri: Pkcs11Uri, cls: number, extra: Array<{ type: number; value: number | boolean | Buffer }> = []): Handle[] {
    const { lib, p11, session } = this;
    const template = [{ type: lib.CKA_CLASS, value: cls }, ...extra];
    if (uri.object !== undefined) template.push({ type: lib.CKA_LABEL, value: Buffer.from(uri.object, 'utf8') });
    if (uri.id !== undefined) template.push({ type: lib.CKA_ID, value: uri.id });
    p11.C_FindObjectsInit(session, template);
    try {
      return p11.C_FindObjects(session, 16);
    } finally {
      p11.C_FindObjectsFinal(session);
    }
  }

  bool(h: Handle, type: number): boolean | null {
    try {
      const [a] = this.p11.C_GetAttributeValue(this.session, h, [{ type }]);
      const v = a?.value;
      return Buffer.isBuffer(v) && v.length > 0 ? v[0] !== 0 : null;
    } catch {
      // CKR_ATTRIBUTE_TYPE_INVALID: the object has no such attribute.
      return null;
    }
  }

  bytes(h: Handle, type: number): Buffer | null {
    try {
      const [a] = this.p11.C_GetAttributeValue(this.session, h, [{ type }]);
      return Buffer.isBuffer(a?.value) ? a.value : null;
    } catch {
      return null;
    }
  }
}

interface SessionOptions {
  /** Log in as the user (needed for private and secret objects). */
  readonly login: boolean;
  /** A read-write session (making objects on the token). */
  readonly rw?: boolean;
}

/** The slot whose token the URI names (token label, manufacturer, serial, model, slot-id); exactly one. */
function findSlot(lib: Lib, p11: P11, uri: Pkcs11Uri): { slot: Handle; label: string; flags: number } {
  const seen: string[] = [];
  const hits: Array<{ slot: Handle; label: string; flags: number }> = [];
  for (const slot of p11.C_GetSlotList(true)) {
    let info;
    try {
      info = p11.C_GetTokenInfo(slot);
    } catch {
      continue;
    }
    const label = trimmed(info.label);
    seen.push(label);
    if (!(info.flags & lib.CKF_TOKEN_INITIALIZED)) continue;
    if (uri.token !== undefined && label !== uri.token) continue;
    if (uri.manufacturer !== undefined && trimmed(info.manufacturerID) !== uri.manufacturer) continue;
    if (uri.serial !== undefined && trimmed(info.serialNumber) !== uri.serial) continue;
    if (uri.model !== undefined && trimmed(info.model) !== uri.model) continue;
    if (uri.slotId !== undefined && slot.readUIntLE(0, Math.min(6, slot.length)) !== uri.slotId) continue;
    hits.push({ slot, label, flags: info.flags });
  }
  if (hits.length === 0) {
    throw new Pkcs11Error('PKCS11_TOKEN_NOT_FOUND', `no token matches ${uri.text.slice(0, 300)} (tokens present: ${seen.length ? seen.map((s) => JSON.stringify(s)).join(', ') : 'none'})`);
  }
  if (hits.length > 1) throw new Pkcs11Error('PKCS11_AMBIGUOUS', `${hits.length} tokens match ${uri.text.slice(0, 300)}; name one with token=, serial= or slot-id=`);
  return hits[0]!;
}

/**
 * Run `fn` in a session on the token `uri` names, logged in when asked, then log out, close and finalise
 * (on every path). `fn` is synchronous, so nothing else of this process touches the module meanwhile.
 */
export async function withToken<T>(uriText: string | Pkcs11Uri, access: Pkcs11Access | undefined, opts: SessionOptions, fn: (t: TokenSession, uri: Pkcs11Uri) => T): Promise<T> {
  const uri = typeof uriText === 'string' ? parsePkcs11Uri(uriText) : uriText;
  const path = modulePathOf(access, uri.modulePath);
  const lib = await loadPkcs11js();
  const p11 = new lib.PKCS11();
  try {
    p11.load(path);
  } catch (e) {
    throw new Pkcs11Error('PKCS11_MODULE_LOAD_FAILED', `cannot load the PKCS#11 module ${path}: ${String((e as Error)?.message ?? e).split('\n')[0]!.slice(0, 200)}`, { cause: e });
  }
  let initialized = false;
  let session: Handle | null = null;
  let loggedIn = false;
  try {
    try {
      p11.C_Initialize();
      initialized = true;
    } catch (e) {
      if (ckrOf(e) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw tokenError(e, `C_Initialize of ${path}`);
    }
    const { slot, label, flags } = findSlot(lib, p11, uri);
    session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | (opts.rw ? lib.CKF_RW_SESSION : 0));
    if (opts.login) {
      if (flags & lib.CKF_USER_PIN_LOCKED) throw new Pkcs11Error('PKCS11_PIN_LOCKED', `the user PIN of token "${label}" is locked (too many wrong PINs); its security officer must unlock it`);
      const pin = pinOf(access);
      if (pin === null) {
        if (flags & lib.CKF_LOGIN_REQUIRED) throw new Pkcs11Error('PKCS11_PIN_REQUIRED', `token "${label}" needs its user PIN: give --pin-file FILE or set VHDCRYPT_PKCS11_PIN`);
      } else {
        // pkcs11js takes the PIN as a JS string (C_Login's argument): that one copy is left to the collector.
        try {
          p11.C_Login(session, lib.CKU_USER, Buffer.from(pin.bytes.buffer, pin.bytes.byteOffset, pin.bytes.length).toString('utf8'));
          loggedIn = true;
        } catch (e) {
          if (ckrOf(e) === 'CKR_USER_ALREADY_LOGGED_IN') loggedIn = true;
          else throw tokenError(e, `login to token "${label}"`);
        } finally {
          if (pin.owned) pin.bytes.fill(0);
        }
      }
    }
    return fn(new TokenSession(lib, p11, slot, session, label), uri);
  } catch (e) {
    throw tokenError(e, 'PKCS#11');
  } finally {
    if (session !== null) {
      if (loggedIn) {
        try { p11.C_Logout(session); } catch { /* the session closes below either way */ }
      }
      try { p11.C_CloseSession(session); } catch { /* finalising closes it */ }
    }
    if (initialized) {
      try { p11.C_Finalize(); } catch { /* unloading follows */ }
    }
    try { p11.close(); } catch { /* nothing more to release */ }
  }
}

export type KekKind = 'aes' | 'rsa';

/** The KEK a URI names: a secret key (AES), else an RSA private key (with its public key or certificate). */
export function findKek(t: TokenSession, uri: Pkcs11Uri): { kind: KekKind; key: Handle; publicKey: Handle | null; cert: Handle | null } {
  const { lib } = t;
  const wants = (ty: ObjectType): boolean => uri.type === undefined || uri.type === ty;
  const one = (hs: Handle[], what: string): Handle | null => {
    if (hs.length > 1) throw new Pkcs11Error('PKCS11_AMBIGUOUS', `${hs.length} ${what}s on token "${t.label}" match ${uri.text.slice(0, 300)}; add object= or id=`);
    return hs[0] ?? null;
  };
  if (wants('secret-key')) {
    const secret = one(t.find(uri, lib.CKO_SECRET_KEY), 'secret key');
    if (secret) return { kind: 'aes', key: secret, publicKey: null, cert: null };
  }
  // type=public or type=cert name the pair by its public half (systemd's URIs do); the private half does the work.
  const anyPair = uri.type === undefined || uri.type === 'private' || uri.type === 'public' || uri.type === 'cert';
  if (anyPair) {
    const priv = one(t.find(uri, lib.CKO_PRIVATE_KEY), 'private key');
    if (priv) {
      return { kind: 'rsa', key: priv, publicKey: one(t.find(uri, lib.CKO_PUBLIC_KEY), 'public key'), cert: one(t.find(uri, lib.CKO_CERTIFICATE), 'certificate') };
    }
  }
  throw new Pkcs11Error('PKCS11_KEY_NOT_FOUND', `no key on token "${t.label}" matches ${uri.text.slice(0, 300)}`);
}

export interface KeyAttributes {
  readonly kind: KekKind;
  readonly sensitive: boolean | null;
  readonly extractable: boolean | null;
  readonly alwaysSensitive: boolean | null;
  readonly neverExtractable: boolean | null;
}

export function attributesOf(t: TokenSession, kind: KekKind, h: Handle): KeyAttributes {
  const { lib } = t;
  return {
    kind,
    sensitive: t.bool(h, lib.CKA_SENSITIVE),
    extractable: t.bool(h, lib.CKA_EXTRACTABLE),
    alwaysSensitive: t.bool(h, lib.CKA_ALWAYS_SENSITIVE),
    neverExtractable: t.bool(h, lib.CKA_NEVER_EXTRACTABLE),
  };
}

/** Refuse a KEK whose value could leave the token (extractable, or not sensitive) unless allowed. */
export function checkNotExportable(label: string, uri: Pkcs11Uri, a: KeyAttributes, allowExtractable: boolean): void {
  if (allowExtractable) return;
  if (a.extractable !== false || a.sensitive !== true) {
    throw new Pkcs11Error('PKCS11_KEY_EXTRACTABLE', `the key ${uri.text.slice(0, 300)} on token "${label}" can leave the token (CKA_EXTRACTABLE ${String(a.extractable)}, CKA_SENSITIVE ${String(a.sensitive)}); use a key made with CKA_EXTRACTABLE false and CKA_SENSITIVE true (vhdcrypt pkcs11 keygen), or --allow-extractable`);
  }
}
