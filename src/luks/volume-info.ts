/** Which LUKS version a device holds, and the parsed facts the engine and NBD server need. */
import { LuksError } from './errors.js';
import type { HeaderIo } from './header-io.js';
import { SECTOR, type Luks1Header } from './luks1-header.js';
import { LUKS_MAGIC } from './on-disk.js';
import { LUKS1_KEY_ENABLED } from './luks1-header.js';
import { checkLuks1Supported, readLuks1 } from './luks1.js';
import { dataSegment, readLuks2, type Luks2State } from './luks2.js';
import { checkCipher, XTS_PLAIN64 } from './keyslot-material.js';
import type { LuksToken } from './luks2-json.js';

export type LuksHeader = { readonly version: 1; readonly phdr: Luks1Header } | { readonly version: 2; readonly state: Luks2State };

/** Reads the header of either version; a LUKS2 volume whose primary copy is gone is found by its secondary. */
export async function readLuksHeader(io: HeaderIo): Promise<LuksHeader> {
  if (io.size < 8n) throw new LuksError('LUKS_TRUNCATED', `${io.name}: ${io.size} bytes, too small for a LUKS header`);
  const head = await io.read(0, 8, 'LUKS magic');
  if (Buffer.from(head.subarray(0, 6)).equals(LUKS_MAGIC)) {
    const version = new DataView(head.buffer, head.byteOffset).getUint16(6, false);
    if (version === 1) return { version: 1, phdr: await readLuks1(io) };
    if (version !== 2) {
      // A damaged version field of a LUKS2 primary: its secondary may still be good.
      try {
        return { version: 2, state: await readLuks2(io) };
      } catch (e) {
        throw new LuksError('LUKS_BAD_VERSION', `${io.name}: LUKS version ${version}, expected 1 or 2`, { cause: e });
      }
    }
    return { version: 2, state: await readLuks2(io) };
  }
  try {
    return { version: 2, state: await readLuks2(io) };
  } catch (e) {
    if (e instanceof LuksError && e.code === 'LUKS_BOTH_HEADERS_BAD') throw e;
    throw new LuksError('LUKS_BAD_MAGIC', `${io.name}: not a LUKS volume (no LUKS magic, no LUKS2 secondary header)`, { cause: e });
  }
}

export interface LuksKeyslotSummary {
  readonly id: number;
  readonly kdf: string;
  /** LUKS2 priority: 0 ignore, 1 normal, 2 high; LUKS1 slots are all normal. */
  readonly priority: number;
}

/** What a reader of the payload needs; parsed once, plain and readonly. */
export interface LuksVolumeInfo {
  readonly version: 1 | 2;
  readonly uuid: string;
  readonly cipher: 'aes-xts-plain64';
  readonly keyBytes: 32 | 64;
  readonly sectorSize: number;
  /** Byte offset of the encrypted payload from the start of the device. */
  readonly dataOffset: bigint;
  /** Bytes of payload, or 'dynamic' (to the end of the device). */
  readonly dataSize: bigint | 'dynamic';
  readonly ivTweak: bigint;
  readonly tokens: readonly LuksToken[];
  readonly keyslots: readonly LuksKeyslotSummary[];
}

/** The volume facts of a parsed header; throws for unsupported ciphers and layouts. */
export function volumeInfoOf(h: LuksHeader): LuksVolumeInfo {
  if (h.version === 1) {
    const p = h.phdr;
    checkLuks1Supported(p);
    return Object.freeze({
      version: 1,
      uuid: p.uuid,
      cipher: XTS_PLAIN64,
      keyBytes: p.keyBytes as 32 | 64,
      sectorSize: SECTOR,
      dataOffset: BigInt(p.payloadOffset) * 512n,
      dataSize: 'dynamic',
      ivTweak: 0n,
      tokens: [],
      keyslots: p.keyslots.filter((k) => k.active === LUKS1_KEY_ENABLED).map((k) => ({ id: k.index, kdf: 'pbkdf2', priority: 1 })),
    });
  }
  const m = h.state.meta;
  const seg = dataSegment(m);
  const digest = m.digests.find((d) => d.segments.includes(seg.id));
  const ks = m.keyslots.find((k) => digest?.keyslots.includes(k.id));
  const keyBytes = ks?.keySize ?? 64;
  checkCipher(seg.encryption, keyBytes, `segment ${seg.id}`);
  return Object.freeze({
    version: 2,
    uuid: h.state.header.uuid,
    cipher: XTS_PLAIN64,
    keyBytes: keyBytes as 32 | 64,
    sectorSize: seg.sectorSize,
    dataOffset: seg.offset,
    dataSize: seg.size,
    ivTweak: seg.ivTweak,
    tokens: m.tokens,
    keyslots: m.keyslots.map((k) => ({ id: k.id, kdf: k.kdf.type === 'unknown' ? k.kdf.name : k.kdf.type, priority: k.priority })),
  });
}

/**
 * The plain64 tweak of the sector at byteOffset in the data segment. dm-crypt
 * counts the IV in 512-byte units whatever the sector size (cryptsetup sets no
 * iv_large_sectors for LUKS2), so a 4096-byte sector advances it by 8.
 */
export function segmentTweak(info: Pick<LuksVolumeInfo, 'sectorSize' | 'ivTweak'>, byteOffsetInSegment: bigint): { firstTweak: bigint; tweakStep: number } {
  if (byteOffsetInSegment < 0n || byteOffsetInSegment % BigInt(info.sectorSize) !== 0n) {
    throw new LuksError('LUKS_BAD_ARG', `offset ${byteOffsetInSegment} is not on a ${info.sectorSize}-byte sector boundary`);
  }
  return { firstTweak: byteOffsetInSegment / 512n + info.ivTweak, tweakStep: info.sectorSize / 512 };
}
