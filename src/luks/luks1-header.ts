/**
 * LUKS1 partition header (phdr): 592 bytes, big-endian, 8 keyslots
 * ("LUKS On-Disk Format Specification Version 1.2.3", §2.4, Table 1 and 2).
 */
import { StructError, bytes, cstring, defineStruct, u16be, u32be, type LayoutValue } from '../binary/index.js';
import { LuksError } from './errors.js';
import { LUKS_MAGIC } from './on-disk.js';
import { LUKS_HASHES, type LuksHash } from './kdf.js';
import { afSectorBytes } from './af-splitter.js';

export const LUKS1_KEYSLOTS = 8;
export const LUKS1_KEY_ENABLED = 0x00ac71f3;
export const LUKS1_KEY_DISABLED = 0x0000dead;
export const LUKS1_DIGEST_BYTES = 20;
export const SECTOR = 512;

/** LUKS1 spec §2.4 Table 2: one keyslot, 48 bytes. */
export const LUKS1_KEYSLOT_LAYOUT = defineStruct(
  'LUKS1 keyslot',
  [
    ['active', u32be, 0],
    ['iterations', u32be, 4],
    ['salt', bytes(32), 8],
    ['keyMaterialOffset', u32be, 40],
    ['stripes', u32be, 44],
  ],
  { size: 48 },
);

/** LUKS1 spec §2.4 Table 1: the phdr up to its keyslots, 208 bytes. */
export const LUKS1_PHDR_LAYOUT = defineStruct(
  'LUKS1 phdr',
  [
    ['magic', bytes(6), 0],
    ['version', u16be, 6],
    ['cipherName', cstring(32), 8],
    ['cipherMode', cstring(32), 40],
    ['hashSpec', cstring(32), 72],
    ['payloadOffset', u32be, 104],
    ['keyBytes', u32be, 108],
    ['mkDigest', bytes(LUKS1_DIGEST_BYTES), 112],
    ['mkDigestSalt', bytes(32), 132],
    ['mkDigestIterations', u32be, 164],
    ['uuid', cstring(40), 168],
  ],
  { size: 208 },
);
/** 208 + 8 x 48 = 592 bytes. */
export const LUKS1_PHDR_SIZE = LUKS1_PHDR_LAYOUT.size + LUKS1_KEYSLOTS * LUKS1_KEYSLOT_LAYOUT.size;

export type Luks1Keyslot = LayoutValue<typeof LUKS1_KEYSLOT_LAYOUT> & { readonly index: number };
export type Luks1Header = Omit<LayoutValue<typeof LUKS1_PHDR_LAYOUT>, 'magic'> & {
  readonly keyslots: readonly Luks1Keyslot[];
};

/** Bytes of one keyslot's key material, in whole sectors. */
export function luks1AreaBytes(h: Pick<Luks1Header, 'keyBytes'>, stripes: number): number {
  return afSectorBytes(h.keyBytes, stripes);
}

export function isLuks1Hash(h: string): h is LuksHash {
  return (LUKS_HASHES as readonly string[]).includes(h);
}

/** Decodes and checks structure and layout of a phdr (cipher support is checked by the caller). */
export function decodeLuks1Header(buf: Uint8Array): Luks1Header {
  if (buf.length < LUKS1_PHDR_SIZE) throw new LuksError('LUKS_TRUNCATED', `LUKS1 header needs ${LUKS1_PHDR_SIZE} bytes, got ${buf.length}`);
  const { magic, ...fields } = LUKS1_PHDR_LAYOUT.decode(buf, 0);
  if (!Buffer.from(magic).equals(LUKS_MAGIC)) throw new LuksError('LUKS_BAD_MAGIC', 'no LUKS magic at offset 0');
  if (fields.version !== 1) throw new LuksError('LUKS_BAD_VERSION', `LUKS version ${fields.version}, expected 1`);
  const keyslots: Luks1Keyslot[] = [];
  for (let i = 0; i < LUKS1_KEYSLOTS; i++) {
    const ks = LUKS1_KEYSLOT_LAYOUT.decode(buf, LUKS1_PHDR_LAYOUT.size + i * LUKS1_KEYSLOT_LAYOUT.size);
    if (ks.active !== LUKS1_KEY_ENABLED && ks.active !== LUKS1_KEY_DISABLED) {
      throw new LuksError('LUKS_BAD_HEADER', `keyslot ${i}: state 0x${ks.active.toString(16)} is neither enabled nor disabled`);
    }
    keyslots.push({ ...ks, index: i });
  }
  const h: Luks1Header = { ...fields, keyslots };
  checkLuks1Layout(h);
  return h;
}

/** Keyslot areas lie after the phdr, before the payload, and do not overlap (LUKS1 §2.4). */
export function checkLuks1Layout(h: Luks1Header): void {
  if (!Number.isInteger(h.keyBytes) || h.keyBytes < 1 || h.keyBytes > 512) {
    throw new LuksError('LUKS_BAD_HEADER', `key bytes ${h.keyBytes} invalid`);
  }
  if (h.mkDigestIterations < 1) throw new LuksError('LUKS_BAD_HEADER', 'MK digest iterations 0');
  const payload = h.payloadOffset * SECTOR;
  const spans: Array<[number, number, number]> = [];
  for (const ks of h.keyslots) {
    if (ks.active !== LUKS1_KEY_ENABLED) continue;
    if (ks.stripes !== 4000) throw new LuksError('LUKS_BAD_HEADER', `keyslot ${ks.index}: AF stripes ${ks.stripes}, expected 4000`);
    if (ks.iterations < 1) throw new LuksError('LUKS_BAD_HEADER', `keyslot ${ks.index}: iterations 0`);
    const start = ks.keyMaterialOffset * SECTOR;
    const end = start + luks1AreaBytes(h, ks.stripes);
    if (start < LUKS1_PHDR_SIZE) throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${ks.index}: area at ${start} overlaps the header`);
    if (payload !== 0 && end > payload) {
      throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${ks.index}: area [${start}, ${end}) overlaps the payload at ${payload}`);
    }
    for (const [i, s, e] of spans) {
      if (start < e && s < end) throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${ks.index}: area overlaps keyslot ${i}`);
    }
    spans.push([ks.index, start, end]);
  }
}

/** Encodes a phdr into a fresh 592-byte buffer. */
export function encodeLuks1Header(h: Luks1Header): Uint8Array {
  const buf = new Uint8Array(LUKS1_PHDR_SIZE);
  const { keyslots, ...fields } = h;
  try {
    LUKS1_PHDR_LAYOUT.encode({ magic: LUKS_MAGIC, ...fields }, buf, 0);
    for (const ks of keyslots) {
      const { index, ...f } = ks;
      LUKS1_KEYSLOT_LAYOUT.encode(f, buf, LUKS1_PHDR_LAYOUT.size + index * LUKS1_KEYSLOT_LAYOUT.size);
    }
  } catch (e) {
    // A header read without its string terminators (or a value no LUKS1 field holds): refuse to rewrite it.
    if (e instanceof StructError && e.code === 'STRUCT_FIELD_OVERFLOW') throw new LuksError('LUKS_BAD_HEADER', `LUKS1 ${e.field} does not fit its field (${e.message})`, { cause: e });
    throw e;
  }
  return buf;
}

/** The cipher spec as "name-mode" (what LUKS2 and dm-crypt call it). */
export function luks1CipherSpec(h: Luks1Header): string {
  return `${h.cipherName}-${h.cipherMode}`;
}
