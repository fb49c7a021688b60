/**
 * Big-endian binary struct layouts, declared once as a field table and used by
 * both the reader and the writer (LUKS1 phdr and LUKS2 binary header are both
 * big-endian: LUKS1 spec §2.4, LUKS2 spec §2.1).
 */
import { LuksError } from './errors.js';

/** A value does not fit its field (e.g. a 40-char UUID read from a header without its NUL). */
export class FieldTooLongError extends RangeError {
  constructor(readonly field: string, message: string) {
    super(message);
  }
}

export type FieldKind = 'u16' | 'u32' | 'u64' | { readonly bytes: number } | { readonly cstring: number };

type FieldValue<K> = K extends 'u16' | 'u32'
  ? number
  : K extends 'u64'
    ? bigint
    : K extends { readonly bytes: number }
      ? Uint8Array
      : string;

export type FieldTable = readonly (readonly [string, FieldKind])[];

export type StructValue<F extends FieldTable> = { -readonly [E in F[number] as E[0]]: FieldValue<E[1]> };

export interface StructLayout<F extends FieldTable> {
  readonly size: number;
  /** Byte offset of each field from the start of the struct. */
  readonly offsetOf: Readonly<Record<F[number][0], number>>;
  decode(buf: Uint8Array, at?: number): StructValue<F>;
  /** Writes every field into buf at `at`; strings are NUL-padded, too-long values throw FieldTooLongError. */
  encode(value: StructValue<F>, buf: Uint8Array, at?: number): void;
}

function kindSize(k: FieldKind): number {
  if (k === 'u16') return 2;
  if (k === 'u32') return 4;
  if (k === 'u64') return 8;
  return 'bytes' in k ? k.bytes : k.cstring;
}

/** Builds a codec from a field table (fields packed with no implicit padding). */
export function defineStruct<const F extends FieldTable>(fields: F): StructLayout<F> {
  const offsets: Record<string, number> = {};
  let size = 0;
  for (const [name, kind] of fields) {
    offsets[name] = size;
    size += kindSize(kind);
  }
  const view = (buf: Uint8Array) => new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    size,
    offsetOf: offsets as Record<F[number][0], number>,
    decode(buf, at = 0) {
      if (buf.length < at + size) throw new LuksError('LUKS_TRUNCATED', `structure needs ${size} bytes at ${at}, the buffer has ${buf.length}`);
      const dv = view(buf);
      const out: Record<string, unknown> = {};
      for (const [name, kind] of fields) {
        const o = at + offsets[name]!;
        if (kind === 'u16') out[name] = dv.getUint16(o, false);
        else if (kind === 'u32') out[name] = dv.getUint32(o, false);
        else if (kind === 'u64') out[name] = dv.getBigUint64(o, false);
        // A copy (Buffer#slice would be a view into the caller's header).
        else if ('bytes' in kind) out[name] = Uint8Array.prototype.slice.call(buf, o, o + kind.bytes);
        else {
          const raw = buf.subarray(o, o + kind.cstring);
          const nul = raw.indexOf(0);
          out[name] = Buffer.from(raw.subarray(0, nul < 0 ? raw.length : nul)).toString('latin1');
        }
      }
      return out as StructValue<F>;
    },
    encode(value, buf, at = 0) {
      const dv = view(buf);
      const v = value as Record<string, unknown>;
      for (const [name, kind] of fields) {
        const o = at + offsets[name]!;
        const x = v[name];
        if (kind === 'u16') dv.setUint16(o, x as number, false);
        else if (kind === 'u32') dv.setUint32(o, x as number, false);
        else if (kind === 'u64') dv.setBigUint64(o, x as bigint, false);
        else if ('bytes' in kind) {
          const b = x as Uint8Array;
          if (b.length > kind.bytes) throw new FieldTooLongError(name, `field ${name} is ${b.length} bytes, room for ${kind.bytes}`);
          buf.fill(0, o, o + kind.bytes);
          buf.set(b, o);
        } else {
          const b = Buffer.from(x as string, 'latin1');
          // A C string field keeps room for its terminating NUL.
          if (b.length >= kind.cstring) throw new FieldTooLongError(name, `field ${name} is ${b.length} chars, room for ${kind.cstring - 1}`);
          buf.fill(0, o, o + kind.cstring);
          buf.set(b, o);
        }
      }
    },
  };
}
