/**
 * Declarative big-endian struct layouts: one table per on-disk structure,
 * used by both the decoder and the encoder so the two can never disagree.
 */
import { ImageError } from './errors.js';

/** How a field's bytes map to a JS value. */
export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'ascii' | 'uuid' | 'utf16be' | 'reserved';

export interface FieldSpec {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly kind: FieldKind;
}

interface KindValue {
  u8: number;
  u16: number;
  u32: number;
  u64: bigint;
  ascii: string;
  uuid: string;
  utf16be: string;
  reserved: never;
}

/** The plain readonly object a table decodes to (reserved fields are skipped). */
export type Decoded<T extends readonly FieldSpec[]> = {
  readonly [F in T[number] as F['kind'] extends 'reserved' ? never : F['name']]: KindValue[F['kind']];
};

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

/** Inverse of uuidFromBytes; returns null when `s` is not 32 hex digits (dashes optional). */
export function uuidToBytes(s: string): Uint8Array | null {
  const hex = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Bytes a table spans (its last field's end). */
function tableSize(table: readonly FieldSpec[]): number {
  let end = 0;
  for (const f of table) end = Math.max(end, f.offset + f.size);
  return end;
}

/** Decode `bytes` (at least as long as the table) into an object keyed by field name. */
export function decodeStruct<T extends readonly FieldSpec[]>(table: T, bytes: Uint8Array): Decoded<T> {
  const need = tableSize(table);
  if (bytes.length < need) throw new ImageError('VHD_TRUNCATED', `structure needs ${need} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Record<string, unknown> = {};
  for (const f of table) {
    const o = f.offset;
    switch (f.kind) {
      case 'u8': out[f.name] = dv.getUint8(o); break;
      case 'u16': out[f.name] = dv.getUint16(o, false); break;
      case 'u32': out[f.name] = dv.getUint32(o, false); break;
      case 'u64': out[f.name] = dv.getBigUint64(o, false); break;
      case 'ascii': out[f.name] = String.fromCharCode(...bytes.subarray(o, o + f.size)); break;
      case 'uuid': out[f.name] = uuidFromBytes(bytes.subarray(o, o + 16)); break;
      case 'utf16be': {
        let s = '';
        for (let i = 0; i + 1 < f.size; i += 2) {
          const c = dv.getUint16(o + i, false);
          if (c === 0) break;
          s += String.fromCharCode(c);
        }
        out[f.name] = s;
        break;
      }
      case 'reserved': break;
    }
  }
  return out as Decoded<T>;
}

/** Encode `values` into `into` at the table's offsets; reserved fields are zeroed. */
export function encodeStruct<T extends readonly FieldSpec[]>(table: T, values: Decoded<T>, into: Uint8Array): void {
  const need = tableSize(table);
  if (into.length < need) throw new ImageError('IMAGE_BAD_ARGUMENT', `structure needs ${need} bytes, the buffer has ${into.length}`);
  const dv = new DataView(into.buffer, into.byteOffset, into.byteLength);
  const v = values as Record<string, unknown>;
  for (const f of table) {
    const o = f.offset;
    const x = v[f.name];
    switch (f.kind) {
      case 'u8': dv.setUint8(o, x as number); break;
      case 'u16': dv.setUint16(o, x as number, false); break;
      case 'u32': dv.setUint32(o, (x as number) >>> 0, false); break;
      case 'u64': dv.setBigUint64(o, x as bigint, false); break;
      case 'ascii': {
        const s = x as string;
        for (let i = 0; i < f.size; i++) into[o + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0;
        break;
      }
      case 'uuid': {
        const b = uuidToBytes(x as string);
        if (!b) throw new ImageError('IMAGE_BAD_ARGUMENT', `field ${f.name}: ${JSON.stringify(x)} is not a UUID`);
        into.set(b, o);
        break;
      }
      case 'utf16be': {
        const s = x as string;
        into.fill(0, o, o + f.size);
        const n = Math.min(s.length, f.size / 2);
        for (let i = 0; i < n; i++) dv.setUint16(o + i * 2, s.charCodeAt(i), false);
        break;
      }
      case 'reserved': into.fill(0, o, o + f.size); break;
    }
  }
}
