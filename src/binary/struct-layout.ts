/**
 * Declarative binary struct layouts: one field table per on-disk structure, used by both the decoder and the
 * encoder so the two can never disagree. Fields are packed in order with no implicit padding; a field may state
 * the offset its format's spec gives it, and the table is refused when the packed offset differs (so a table
 * copied from a spec cannot drift by a byte unnoticed), as it is when a declared total size differs.
 *
 * Integers are unsigned, each with its byte order (VHD: big-endian, "Hard Disk Footer Format"; LUKS1 phdr and
 * LUKS2 binary header: big-endian, LUKS1 spec 1.2.3 §2.4 and LUKS2 spec §2.1). Encoding never truncates: an
 * integer outside its field's range, a byte array or string longer than its field, or a character that is not
 * one byte is a StructError (STRUCT_FIELD_OVERFLOW), where DataView would silently keep the low bits. Decoding
 * checks that the buffer holds the whole structure (STRUCT_TRUNCATED) before reading a field.
 */
import { StructError } from './errors.js';

export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'bytes' | 'ascii' | 'cstring' | 'uuid' | 'utf16be' | 'reserved' | 'skip';

/** How a field's bytes map to a JS value; build them with the constants and functions below. */
export interface FieldType<K extends FieldKind = FieldKind> {
  readonly kind: K;
  readonly size: number;
  readonly littleEndian: boolean;
}

const fieldType = <K extends FieldKind>(kind: K, size: number, littleEndian = false): FieldType<K> => {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`a ${kind} field needs a positive whole size, got ${size}`);
  return Object.freeze({ kind, size, littleEndian });
};

export const u8 = fieldType('u8', 1);
export const u16be = fieldType('u16', 2);
export const u16le = fieldType('u16', 2, true);
export const u32be = fieldType('u32', 4);
export const u32le = fieldType('u32', 4, true);
export const u64be = fieldType('u64', 8);
export const u64le = fieldType('u64', 8, true);
/** Raw bytes (decoded as a copy); a shorter value is zero-padded. */
export const bytes = (n: number): FieldType<'bytes'> => fieldType('bytes', n);
/** A fixed-width string of one-byte characters (every byte of the field is a character); a shorter value is NUL-padded. */
export const ascii = (n: number): FieldType<'ascii'> => fieldType('ascii', n);
/** A NUL-terminated string of one-byte characters: at most n - 1 of them, decoded up to the first NUL. */
export const cstring = (n: number): FieldType<'cstring'> => fieldType('cstring', n);
/** 16 bytes shown as a lowercase 8-4-4-4-12 string, in on-disk byte order. */
export const uuid = fieldType('uuid', 16);
/** A big-endian UTF-16 string of at most n / 2 code units, NUL-padded, decoded up to the first NUL unit. */
export const utf16be = (n: number): FieldType<'utf16be'> => fieldType('utf16be', n);
/** Zeros on write, not decoded. */
export const reserved = (n: number): FieldType<'reserved'> => fieldType('reserved', n);
/** Bytes another layout owns (e.g. an array of entries): neither decoded nor written. */
export const skip = (n: number): FieldType<'skip'> => fieldType('skip', n);

interface KindValue {
  u8: number;
  u16: number;
  u32: number;
  u64: bigint;
  bytes: Uint8Array;
  ascii: string;
  cstring: string;
  uuid: string;
  utf16be: string;
}

/** A field: name, type, and optionally the offset the format's spec gives it (checked against the packed one). */
export type FieldEntry = readonly [name: string, type: FieldType, offset?: number];
export type FieldTable = readonly FieldEntry[];

/** The plain object a table decodes to and encodes from (reserved and skipped fields have no value). */
export type StructValue<F extends FieldTable> = {
  readonly [E in F[number] as E[1]['kind'] extends 'reserved' | 'skip' ? never : E[0]]: KindValue[E[1]['kind'] & keyof KindValue];
};

export interface StructLayout<F extends FieldTable> {
  /** What the structure is, for messages ("VHD footer"). */
  readonly name: string;
  /** Bytes the structure spans. */
  readonly size: number;
  /** Byte offset of each field from the start of the structure. */
  readonly offsetOf: Readonly<Record<F[number][0], number>>;
  /** Decodes the structure at `at`; STRUCT_TRUNCATED when `buf` does not hold all of it. */
  decode(buf: Uint8Array, at?: number): StructValue<F>;
  /** Writes every field into `buf` at `at` (skipped fields untouched); a value that does not fit is STRUCT_FIELD_OVERFLOW. */
  encode(value: StructValue<F>, buf: Uint8Array, at?: number): void;
}

/** The value type of a layout: `LayoutValue<typeof VHD_FOOTER_LAYOUT>`. */
export type LayoutValue<L> = L extends StructLayout<infer F> ? StructValue<F> : never;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** 16 bytes as a lowercase 8-4-4-4-12 string, in on-disk byte order. */
export function uuidFromBytes(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += HEX[b[i]!];
  }
  return s;
}

/** Inverse of uuidFromBytes; null when `s` is not 32 hex digits (dashes optional). */
export function uuidToBytes(s: string): Uint8Array | null {
  const hex = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

const U64_LIMIT = 1n << 64n;

/**
 * Builds a codec from a field table. `opts.size` is the structure's size as its spec states it; the table must
 * add up to exactly that. A table that contradicts a stated offset or size is a defect of this program, refused
 * when the module loads.
 */
export function defineStruct<const F extends FieldTable>(name: string, fields: F, opts: { readonly size?: number } = {}): StructLayout<F> {
  const offsets: Record<string, number> = {};
  let size = 0;
  for (const [field, t, stated] of fields) {
    if (Object.hasOwn(offsets, field)) throw new Error(`${name}: field ${field} declared twice`);
    if (stated !== undefined && stated !== size) throw new Error(`${name}: field ${field} is stated at offset ${stated} but packs at ${size}`);
    offsets[field] = size;
    size += t.size;
  }
  if (opts.size !== undefined && opts.size !== size) throw new Error(`${name}: fields add up to ${size} bytes, the structure is ${opts.size}`);

  const room = (buf: Uint8Array, at: number, verb: string): DataView => {
    if (!(buf instanceof Uint8Array)) throw new StructError('STRUCT_BAD_VALUE', null, `${name}: ${verb} expected a Uint8Array`);
    if (!Number.isSafeInteger(at) || at < 0 || buf.length - at < size) {
      throw new StructError('STRUCT_TRUNCATED', null, `${name}: needs ${size} bytes at offset ${at}, the buffer has ${buf.length}`);
    }
    return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  };
  const overflow = (field: string, what: string) => new StructError('STRUCT_FIELD_OVERFLOW', field, `${name} field ${field}: ${what}`);
  const badValue = (field: string, what: string) => new StructError('STRUCT_BAD_VALUE', field, `${name} field ${field}: ${what}`);

  /** One-byte characters of `s`, checked: a character above 0xff would lose its high bits. */
  const latin1 = (field: string, x: unknown, max: number): string => {
    if (typeof x !== 'string') throw badValue(field, `expected a string, got ${typeof x}`);
    if (x.length > max) throw overflow(field, `${x.length} characters, room for ${max}`);
    for (let i = 0; i < x.length; i++) {
      if (x.charCodeAt(i) > 0xff) throw overflow(field, `character ${i} is not a one-byte character`);
    }
    return x;
  };

  return {
    name,
    size,
    offsetOf: offsets as Record<F[number][0], number>,

    decode(buf, at = 0) {
      const dv = room(buf, at, 'decode');
      const out: Record<string, unknown> = {};
      for (const [field, t] of fields) {
        const o = at + offsets[field]!;
        switch (t.kind) {
          case 'u8': out[field] = dv.getUint8(o); break;
          case 'u16': out[field] = dv.getUint16(o, t.littleEndian); break;
          case 'u32': out[field] = dv.getUint32(o, t.littleEndian); break;
          case 'u64': out[field] = dv.getBigUint64(o, t.littleEndian); break;
          // A copy: a view would alias the caller's buffer (Buffer#slice is a view too).
          case 'bytes': out[field] = Uint8Array.prototype.slice.call(buf, o, o + t.size); break;
          case 'ascii': out[field] = String.fromCharCode(...buf.subarray(o, o + t.size)); break;
          case 'cstring': {
            const raw = buf.subarray(o, o + t.size);
            const nul = raw.indexOf(0);
            out[field] = String.fromCharCode(...raw.subarray(0, nul < 0 ? raw.length : nul));
            break;
          }
          case 'uuid': out[field] = uuidFromBytes(buf.subarray(o, o + 16)); break;
          case 'utf16be': {
            let s = '';
            for (let i = 0; i + 1 < t.size; i += 2) {
              const c = dv.getUint16(o + i, false);
              if (c === 0) break;
              s += String.fromCharCode(c);
            }
            out[field] = s;
            break;
          }
          case 'reserved':
          case 'skip':
            break;
        }
      }
      return out as StructValue<F>;
    },

    encode(value, buf, at = 0) {
      const dv = room(buf, at, 'encode');
      const v = value as Record<string, unknown>;
      // Every value is checked before the first byte is written: a refused encode leaves `buf` as it was.
      const writes: (() => void)[] = [];
      for (const [field, t] of fields) {
        const o = at + offsets[field]!;
        const x = v[field];
        switch (t.kind) {
          case 'u8':
          case 'u16':
          case 'u32': {
            if (typeof x !== 'number' || !Number.isInteger(x)) throw badValue(field, `expected a whole number, got ${typeof x === 'number' ? x : typeof x}`);
            const limit = 2 ** (8 * t.size);
            if (x < 0 || x >= limit) throw overflow(field, `${x} does not fit in ${t.size} byte(s) (0..${limit - 1})`);
            if (t.kind === 'u8') writes.push(() => dv.setUint8(o, x));
            else if (t.kind === 'u16') writes.push(() => dv.setUint16(o, x, t.littleEndian));
            else writes.push(() => dv.setUint32(o, x, t.littleEndian));
            break;
          }
          case 'u64': {
            if (typeof x !== 'bigint') throw badValue(field, `expected a bigint, got ${typeof x}`);
            if (x < 0n || x >= U64_LIMIT) throw overflow(field, `${x} does not fit in 8 bytes (0..${U64_LIMIT - 1n})`);
            writes.push(() => dv.setBigUint64(o, x, t.littleEndian));
            break;
          }
          case 'bytes': {
            if (!(x instanceof Uint8Array)) throw badValue(field, 'expected a Uint8Array');
            if (x.length > t.size) throw overflow(field, `${x.length} bytes, room for ${t.size}`);
            writes.push(() => {
              buf.fill(0, o, o + t.size);
              buf.set(x, o);
            });
            break;
          }
          case 'ascii':
          case 'cstring': {
            // A C string keeps room for its terminating NUL.
            const s = latin1(field, x, t.kind === 'cstring' ? t.size - 1 : t.size);
            writes.push(() => {
              buf.fill(0, o, o + t.size);
              for (let i = 0; i < s.length; i++) buf[o + i] = s.charCodeAt(i);
            });
            break;
          }
          case 'uuid': {
            const b = typeof x === 'string' ? uuidToBytes(x) : null;
            if (!b) throw badValue(field, `${JSON.stringify(x)} is not a UUID (32 hex digits)`);
            writes.push(() => buf.set(b, o));
            break;
          }
          case 'utf16be': {
            if (typeof x !== 'string') throw badValue(field, `expected a string, got ${typeof x}`);
            const units = Math.floor(t.size / 2);
            if (x.length > units) throw overflow(field, `${x.length} UTF-16 code units, room for ${units}`);
            writes.push(() => {
              buf.fill(0, o, o + t.size);
              for (let i = 0; i < x.length; i++) dv.setUint16(o + i * 2, x.charCodeAt(i), false);
            });
            break;
          }
          case 'reserved':
            writes.push(() => buf.fill(0, o, o + t.size));
            break;
          case 'skip':
            break;
        }
      }
      for (const w of writes) w();
    },
  };
}
