/**
 * LUKS2 binary header: 4096 bytes, big-endian, followed by the JSON area; two
 * copies, the second at offset hdr_size (LUKS2 spec §2.1, Figure 2).
 */
import { createHash, randomBytes } from 'node:crypto';
import { StructError, bytes, cstring, defineStruct, reserved, u16be, u64be, type LayoutValue } from '../binary/index.js';
import { LuksError } from './errors.js';
import { LUKS2_MAGIC_SECONDARY, LUKS2_MAX_HDR_SIZE, LUKS_MAGIC } from './on-disk.js';

export const LUKS2_BINARY_HEADER_SIZE = 4096;
/** hdr_size values the format allows: 16 KiB .. 4 MiB, powers of two (spec §2.1). */
export const LUKS2_HDR_SIZES: readonly number[] = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096].map((k) => k * 1024);

/** LUKS2 spec §2.1 Table 1: the binary header, 4096 bytes. */
export const LUKS2_HEADER_LAYOUT = defineStruct(
  'LUKS2 binary header',
  [
    ['magic', bytes(6), 0],
    ['version', u16be, 6],
    ['hdrSize', u64be, 8],
    ['seqid', u64be, 16],
    ['label', cstring(48), 24],
    ['checksumAlg', cstring(32), 72],
    ['salt', bytes(64), 104],
    ['uuid', cstring(40), 168],
    ['subsystem', cstring(48), 208],
    ['hdrOffset', u64be, 256],
    ['padding', bytes(184), 264],
    ['csum', bytes(64), 448],
    ['padding4096', reserved(7 * 512), 512],
  ],
  { size: LUKS2_BINARY_HEADER_SIZE },
);
const CSUM_OFFSET = LUKS2_HEADER_LAYOUT.offsetOf.csum;

export type Luks2BinaryHeader = Omit<LayoutValue<typeof LUKS2_HEADER_LAYOUT>, 'magic' | 'padding' | 'csum'> & {
  readonly which: 'primary' | 'secondary';
};

const CSUM_ALGS: Record<string, number> = { sha256: 32, sha512: 64, sha1: 20 };

function checksum(alg: string, region: Uint8Array): Buffer {
  const zeroed = Uint8Array.from(region);
  zeroed.fill(0, CSUM_OFFSET, CSUM_OFFSET + 64);
  return createHash(alg).update(zeroed).digest();
}

/**
 * Decodes one copy from its whole region (hdr_size bytes: header + JSON area),
 * checks magic, version, offset, size and checksum, and returns the header and
 * the JSON text (before the first NUL).
 */
export function decodeLuks2Copy(region: Uint8Array, at: number, which: 'primary' | 'secondary'): { header: Luks2BinaryHeader; jsonText: string } {
  if (region.length < LUKS2_BINARY_HEADER_SIZE) throw new LuksError('LUKS_TRUNCATED', `${which} LUKS2 header at ${at}: ${region.length} bytes, the binary header is ${LUKS2_BINARY_HEADER_SIZE}`);
  const { magic, padding: _p, csum, ...f } = LUKS2_HEADER_LAYOUT.decode(region, 0);
  const want = which === 'primary' ? LUKS_MAGIC : LUKS2_MAGIC_SECONDARY;
  if (!Buffer.from(magic).equals(want)) throw new LuksError('LUKS_BAD_MAGIC', `${which} LUKS2 header at ${at}: bad magic`);
  if (f.version !== 2) throw new LuksError('LUKS_BAD_VERSION', `${which} header at ${at}: version ${f.version}, expected 2`);
  if (!LUKS2_HDR_SIZES.includes(Number(f.hdrSize)) || f.hdrSize > LUKS2_MAX_HDR_SIZE) {
    throw new LuksError('LUKS_BAD_HEADER', `${which} header at ${at}: hdr_size ${f.hdrSize} is not an allowed metadata size`);
  }
  if (f.hdrOffset !== BigInt(at)) throw new LuksError('LUKS_BAD_HEADER', `${which} header at ${at}: hdr_offset says ${f.hdrOffset}`);
  if (region.length !== Number(f.hdrSize)) throw new LuksError('LUKS_BAD_HEADER', `${which} header at ${at}: hdr_size ${f.hdrSize} differs from the copy's size`);
  const len = CSUM_ALGS[f.checksumAlg];
  if (len === undefined) throw new LuksError('LUKS_BAD_CHECKSUM', `${which} header at ${at}: checksum algorithm ${JSON.stringify(f.checksumAlg)} unsupported`);
  const got = checksum(f.checksumAlg, region);
  if (!got.equals(csum.subarray(0, len)) || csum.subarray(len).some((b) => b !== 0)) {
    throw new LuksError('LUKS_BAD_CHECKSUM', `${which} header at ${at}: ${f.checksumAlg} checksum mismatch`);
  }
  const json = region.subarray(LUKS2_BINARY_HEADER_SIZE);
  const nul = json.indexOf(0);
  if (nul < 0) throw new LuksError('LUKS_BAD_JSON', `${which} header at ${at}: JSON area is not NUL-terminated (oversized JSON)`);
  return { header: { ...f, which }, jsonText: Buffer.from(json.subarray(0, nul)).toString('utf8') };
}

/** Only the hdr_size of a copy whose magic/version look right, to know how much to read. */
export function peekLuks2HdrSize(first4k: Uint8Array, which: 'primary' | 'secondary'): bigint | null {
  const want = which === 'primary' ? LUKS_MAGIC : LUKS2_MAGIC_SECONDARY;
  if (first4k.length < LUKS2_BINARY_HEADER_SIZE || !Buffer.from(first4k.subarray(0, 6)).equals(want)) return null;
  const f = LUKS2_HEADER_LAYOUT.decode(first4k, 0);
  if (f.version !== 2 || !LUKS2_HDR_SIZES.includes(Number(f.hdrSize)) || f.hdrSize > LUKS2_MAX_HDR_SIZE) return null;
  return f.hdrSize;
}

export interface Luks2CopyFields {
  readonly hdrSize: number;
  readonly seqid: bigint;
  readonly label: string;
  readonly uuid: string;
  readonly subsystem: string;
}

function encodeFields(v: Parameters<typeof LUKS2_HEADER_LAYOUT.encode>[0], region: Uint8Array): void {
  try {
    LUKS2_HEADER_LAYOUT.encode(v, region, 0);
  } catch (e) {
    // A label, subsystem or uuid read without its NUL (48/48/40 chars) cannot be written back.
    if (e instanceof StructError && e.code === 'STRUCT_FIELD_OVERFLOW') throw new LuksError('LUKS_BAD_HEADER', `LUKS2 ${e.field} does not fit its field (${e.message})`, { cause: e });
    throw e;
  }
}

/** Encodes both copies (primary then secondary, 2 x hdr_size bytes) with fresh salts and sha256 checksums. */
export function encodeLuks2Copies(f: Luks2CopyFields, jsonText: string): Uint8Array {
  const json = Buffer.from(jsonText, 'utf8');
  const jsonSize = f.hdrSize - LUKS2_BINARY_HEADER_SIZE;
  if (json.length >= jsonSize) throw new LuksError('LUKS_BAD_JSON', `metadata JSON is ${json.length} bytes; the JSON area holds ${jsonSize - 1}`);
  const out = new Uint8Array(2 * f.hdrSize);
  for (const which of ['primary', 'secondary'] as const) {
    const at = which === 'primary' ? 0 : f.hdrSize;
    const region = out.subarray(at, at + f.hdrSize);
    encodeFields(
      {
        magic: which === 'primary' ? LUKS_MAGIC : LUKS2_MAGIC_SECONDARY,
        version: 2,
        hdrSize: BigInt(f.hdrSize),
        seqid: f.seqid,
        label: f.label,
        checksumAlg: 'sha256',
        salt: randomBytes(64),
        uuid: f.uuid,
        subsystem: f.subsystem,
        hdrOffset: BigInt(at),
        padding: new Uint8Array(0),
        csum: new Uint8Array(0),
      },
      region,
    );
    region.set(json, LUKS2_BINARY_HEADER_SIZE);
    region.set(checksum('sha256', region), CSUM_OFFSET);
  }
  return out;
}
