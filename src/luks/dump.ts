/** A JSON-able report of a header with what `cryptsetup luksDump` shows (no secrets: salts and digests are public). */
import { withHeaderIo, type LuksTarget } from './header-io.js';
import { LUKS1_KEY_ENABLED, SECTOR } from './luks1-header.js';
import { readLuksHeader, type LuksHeader } from './volume-info.js';
import type { JsonObject } from './luks2-json.js';

/** bigint as a number when exact, else a decimal string. */
function num(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const PRIORITY = ['ignore', 'normal', 'high'];

/** A LUKS2 keyslot priority by the name cryptsetup uses (0 ignore, 1 normal, 2 high); LUKS1 slots are all normal. */
export function keyslotPriorityName(priority: number): string {
  return PRIORITY[priority] ?? String(priority);
}

export type LuksDump = JsonObject;

/** Dump of an already parsed header. */
export function dumpHeader(h: LuksHeader): LuksDump {
  if (h.version === 1) {
    const p = h.phdr;
    return {
      version: 1,
      cipherName: p.cipherName,
      cipherMode: p.cipherMode,
      hashSpec: p.hashSpec,
      payloadOffset: p.payloadOffset,
      mkBits: p.keyBytes * 8,
      mkDigest: hex(p.mkDigest),
      mkSalt: hex(p.mkDigestSalt),
      mkIterations: p.mkDigestIterations,
      uuid: p.uuid,
      keyslots: p.keyslots.map((k): JsonObject =>
        k.active === LUKS1_KEY_ENABLED
          ? { id: k.index, enabled: true, iterations: k.iterations, salt: hex(k.salt), keyMaterialOffset: k.keyMaterialOffset, stripes: k.stripes }
          : { id: k.index, enabled: false },
      ),
    };
  }
  const { header, meta, hdrSize } = h.state;
  return {
    version: 2,
    epoch: num(header.seqid),
    metadataArea: hdrSize,
    keyslotsArea: num(meta.config.keyslotsSize),
    uuid: header.uuid,
    label: header.label,
    subsystem: header.subsystem,
    flags: [...meta.config.flags],
    requirements: [...meta.config.requirements],
    dataSegments: meta.segments.map((s) => ({
      id: s.id,
      type: s.type,
      offset: num(s.offset),
      length: s.size === 'dynamic' ? 'whole device' : num(s.size),
      cipher: s.encryption,
      sectorSize: s.sectorSize,
      ivTweak: num(s.ivTweak),
    })),
    keyslots: meta.keyslots.map((k) => {
      const kdf: JsonObject =
        k.kdf.type === 'unknown'
          ? { pbkdf: k.kdf.name }
          : k.kdf.type === 'pbkdf2'
            ? { pbkdf: 'pbkdf2', hash: k.kdf.hash, iterations: k.kdf.iterations, salt: hex(k.kdf.salt) }
            : { pbkdf: k.kdf.type, time: k.kdf.time, memory: k.kdf.memory, threads: k.kdf.cpus, salt: hex(k.kdf.salt) };
      return {
        id: k.id,
        type: k.type,
        keyBits: k.keySize * 8,
        priority: keyslotPriorityName(k.priority),
        cipher: k.areaEncryption,
        cipherKeyBits: k.areaKeySize * 8,
        ...kdf,
        afStripes: k.afStripes,
        afHash: k.afHash,
        areaOffset: num(k.areaOffset),
        areaLength: num(k.areaSize),
        digestId: meta.digests.find((d) => d.keyslots.includes(k.id))?.id ?? null,
      };
    }),
    tokens: meta.tokens.map((t) => ({ id: t.id, ...t.json })),
    digests: meta.digests.map((d) => ({
      id: d.id,
      type: d.type,
      hash: d.hash,
      iterations: d.iterations,
      salt: hex(d.salt),
      digest: hex(d.digest),
      keyslots: d.keyslots.map(String),
      segments: d.segments.map(String),
    })),
    ...(h.state.needsRepair ? { problems: [...h.state.problems] } : {}),
  };
}

/** What `cryptsetup luksDump` reports, as a JSON-able object. */
export async function dump(target: LuksTarget): Promise<LuksDump> {
  return withHeaderIo(target, false, async (io) => dumpHeader(await readLuksHeader(io)));
}

/** Bytes of header region to back up: LUKS1 up to the payload, LUKS2 both copies and the keyslots area. */
export function headerRegionBytes(h: LuksHeader): number {
  if (h.version === 1) {
    // cryptsetup's LUKS1 backup: up to the end of the last keyslot area, 4096-aligned.
    const area = Math.ceil((h.phdr.keyBytes * 4000) / SECTOR);
    const end = Math.max(...h.phdr.keyslots.map((k) => (k.keyMaterialOffset + area) * SECTOR));
    const aligned = Math.ceil(end / 4096) * 4096;
    return h.phdr.payloadOffset > 0 ? Math.min(aligned, h.phdr.payloadOffset * SECTOR) : aligned;
  }
  return Number(2n * BigInt(h.state.hdrSize) + h.state.meta.config.keyslotsSize);
}

/**
 * The byte ranges [start, end) of a header region that a freshly made header can hold anything but zeros in:
 * LUKS1 its header and keyslot areas (headerRegionBytes), LUKS2 both binary header + JSON copies and each keyslot's
 * area (LUKS2 on-disk format, 3.2-3.3). Everything else in the region is zero.
 */
export function headerUsedRanges(h: LuksHeader): Array<readonly [number, number]> {
  if (h.version === 1) return [[0, headerRegionBytes(h)]];
  const out: Array<readonly [number, number]> = [[0, 2 * h.state.hdrSize]];
  for (const k of h.state.meta.keyslots) out.push([Number(k.areaOffset), Number(k.areaOffset + k.areaSize)]);
  return out.sort((a, b) => a[0] - b[0]);
}

/** headerUsedRanges of the header held in `bytes`. */
export async function usedRangesOf(bytes: Uint8Array): Promise<Array<readonly [number, number]>> {
  return withHeaderIo(bytes, false, async (io) => headerUsedRanges(await readLuksHeader(io)));
}
