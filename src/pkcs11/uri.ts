/**
 * PKCS#11 URIs (RFC 7512): `pkcs11:token=NAME;object=LABEL;type=private?module-path=/usr/lib/x.so`.
 * The path names the token (token, manufacturer, serial, model, slot-id, ...) and the object (object, id,
 * type); the query may name the module. A PIN never travels in a URI here: pin-value and pin-source are
 * refused (the PIN comes from --pin-file or $VHDCRYPT_PKCS11_PIN only), so no PIN lands in argv, a vault tag
 * or a LUKS token.
 */
import { Pkcs11Error } from './errors.js';

/** RFC 7512 §2.3 path attributes this parser knows. */
const PATH_ATTRS = new Set([
  'token', 'manufacturer', 'serial', 'model', 'library-manufacturer', 'library-description', 'library-version',
  'object', 'type', 'id', 'slot-description', 'slot-manufacturer', 'slot-id',
]);
/** RFC 7512 §2.3 query attributes. */
const QUERY_ATTRS = new Set(['pin-source', 'pin-value', 'module-name', 'module-path']);
export const OBJECT_TYPES = ['public', 'private', 'cert', 'secret-key', 'data'] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];
/** A URI longer than this is refused before parsing (it would never name one object sensibly). */
const MAX_URI_CHARS = 4096;

export interface Pkcs11Uri {
  /** The URI as given (it is what a vault tag or a LUKS token records). */
  readonly text: string;
  readonly token?: string;
  readonly manufacturer?: string;
  readonly serial?: string;
  readonly model?: string;
  readonly slotId?: number;
  readonly object?: string;
  /** CKA_ID bytes. */
  readonly id?: Buffer;
  readonly type?: ObjectType;
  readonly modulePath?: string;
}

export function isPkcs11Uri(s: unknown): s is string {
  return typeof s === 'string' && s.slice(0, 7).toLowerCase() === 'pkcs11:';
}

/** RFC 3986 percent-decoding to bytes; a stray '%' is refused. */
function pctBytes(v: string, what: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '%') {
      const h = v.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(h)) throw new Pkcs11Error('PKCS11_BAD_URI', `bad percent-encoding in ${what}`);
      out.push(parseInt(h, 16));
      i += 2;
    } else {
      out.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(out);
}

/** Parse an RFC 7512 URI; anything it does not understand is PKCS11_BAD_URI naming the attribute. */
export function parsePkcs11Uri(text: string): Pkcs11Uri {
  if (!isPkcs11Uri(text)) throw new Pkcs11Error('PKCS11_BAD_URI', 'a PKCS#11 URI starts with pkcs11:');
  if (text.length > MAX_URI_CHARS) throw new Pkcs11Error('PKCS11_BAD_URI', `a PKCS#11 URI of ${text.length} characters is longer than ${MAX_URI_CHARS}`);
  const body = text.slice(7);
  const q = body.indexOf('?');
  const path = q < 0 ? body : body.slice(0, q);
  const query = q < 0 ? '' : body.slice(q + 1);
  const seen = new Map<string, string>();
  const take = (part: string, sep: string, known: Set<string>, where: string): void => {
    if (part === '') return;
    for (const pair of part.split(sep)) {
      const eq = pair.indexOf('=');
      const name = (eq < 0 ? pair : pair.slice(0, eq)).toLowerCase();
      if (eq < 0 || name === '') throw new Pkcs11Error('PKCS11_BAD_URI', `a PKCS#11 URI ${where} attribute is name=value`);
      if (name === 'pin-value' || name === 'pin-source') {
        throw new Pkcs11Error('PKCS11_BAD_PIN_SOURCE', `${name} in a PKCS#11 URI is refused: give the PIN with --pin-file or $VHDCRYPT_PKCS11_PIN`);
      }
      // RFC 7512 §2.3: vendor attributes start with x-; they narrow nothing here.
      if (!known.has(name) && !name.startsWith('x-')) throw new Pkcs11Error('PKCS11_BAD_URI', `unknown PKCS#11 URI ${where} attribute '${name.slice(0, 40)}'`);
      // §2.3: a path attribute may appear once.
      if (seen.has(name)) throw new Pkcs11Error('PKCS11_BAD_URI', `PKCS#11 URI attribute '${name}' appears twice`);
      seen.set(name, pair.slice(eq + 1));
    }
  };
  take(path, ';', PATH_ATTRS, 'path');
  take(query, '&', QUERY_ATTRS, 'query');
  const str = (name: string): string | undefined => {
    const v = seen.get(name);
    return v === undefined ? undefined : pctBytes(v, name).toString('utf8');
  };
  const type = str('type');
  if (type !== undefined && !(OBJECT_TYPES as readonly string[]).includes(type)) {
    throw new Pkcs11Error('PKCS11_BAD_URI', `PKCS#11 URI type is one of ${OBJECT_TYPES.join(', ')}, not '${type.slice(0, 20)}'`);
  }
  const slot = str('slot-id');
  if (slot !== undefined && !/^\d{1,10}$/.test(slot)) throw new Pkcs11Error('PKCS11_BAD_URI', 'PKCS#11 URI slot-id is a decimal number');
  const id = seen.has('id') ? pctBytes(seen.get('id')!, 'id') : undefined;
  return {
    text,
    ...(str('token') !== undefined ? { token: str('token') } : {}),
    ...(str('manufacturer') !== undefined ? { manufacturer: str('manufacturer') } : {}),
    ...(str('serial') !== undefined ? { serial: str('serial') } : {}),
    ...(str('model') !== undefined ? { model: str('model') } : {}),
    ...(slot !== undefined ? { slotId: Number(slot) } : {}),
    ...(str('object') !== undefined ? { object: str('object') } : {}),
    ...(id !== undefined ? { id } : {}),
    ...(type !== undefined ? { type: type as ObjectType } : {}),
    ...(str('module-path') !== undefined ? { modulePath: str('module-path') } : {}),
  };
}

/** RFC 7512 §2.3 pk11-pchar: unreserved and a few sub-delims stay; everything else is percent-encoded. */
function pct(s: string): string {
  return [...Buffer.from(s, 'utf8')].map((b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9\-._~:@!$'()*+,]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }).join('');
}

/** A URI naming one object of one token, built from its labels (pkcs11 keygen prints it). */
export function formatPkcs11Uri(parts: { token: string; object?: string; type?: ObjectType }): string {
  const attrs = [`token=${pct(parts.token)}`];
  if (parts.object !== undefined) attrs.push(`object=${pct(parts.object)}`);
  if (parts.type !== undefined) attrs.push(`type=${parts.type}`);
  return `pkcs11:${attrs.join(';')}`;
}
