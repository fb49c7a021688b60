/** LUKS2 volumes: both header copies, unlock, format, keyslot and token changes over a HeaderIo (LUKS2 spec §2-4). */
import { pbkdf2Sync, randomBytes, randomFillSync, randomUUID } from 'node:crypto';

import { LuksError } from './errors.js';
import { openHeaderIo, type HeaderIo } from './header-io.js';
import { afSectorBytes } from './af-splitter.js';
import { DEFAULT_KDF_LIMITS, LUKS_HASHES, checkKdfCost, kdfParamsFor, type KdfLimits, type KdfOptions, type KdfParams, type LuksHash } from './kdf.js';
import { LUKS_STRIPES, XTS_PLAIN64, checkCipher, keyslotAttempt, sealKeyslot, type KeyslotGeometry } from './keyslot-material.js';
import { tryKeyslots, type UnlockAttempt } from './keyslot-order.js';
import {
  LUKS2_BINARY_HEADER_SIZE,
  LUKS2_HDR_SIZES,
  decodeLuks2Copy,
  encodeLuks2Copies,
  peekLuks2HdrSize,
  type Luks2BinaryHeader,
} from './luks2-binary-header.js';
import { LUKS2_MAX_KEYSLOTS_SIZE } from './on-disk.js';
import { LUKS2_MAX_ID, LUKS2_MAX_JSON_DEPTH, checkJsonDepth, cloneJson, parseLuks2Json, type JsonObject, type Luks2Keyslot, type Luks2Metadata, type Luks2Segment } from './luks2-json.js';


/** The header as read: the copy in force, and whether the other copy needs repair. */
export interface Luks2State {
  readonly header: Luks2BinaryHeader;
  readonly meta: Luks2Metadata;
  readonly hdrSize: number;
  /** The other copy is damaged or stale; the next write (or repairLuksHeader) rewrites both. */
  readonly needsRepair: boolean;
  readonly problems: readonly string[];
}

type Copy = { header: Luks2BinaryHeader; meta: Luks2Metadata; text: string };

async function readCopy(io: HeaderIo, at: number, which: 'primary' | 'secondary'): Promise<Copy> {
  const first = await io.read(at, LUKS2_BINARY_HEADER_SIZE, `${which} LUKS2 header`);
  const size = peekLuks2HdrSize(first, which);
  if (size === null) {
    // decodeLuks2Copy names the exact fault (magic, version or size).
    decodeLuks2Copy(first, at, which);
    throw new LuksError('LUKS_BAD_HEADER', `${which} header at ${at} unreadable`);
  }
  if (which === 'secondary' && size !== BigInt(at)) throw new LuksError('LUKS_BAD_HEADER', `secondary header at ${at} has hdr_size ${size}`);
  const region = await io.read(at, Number(size), `${which} LUKS2 header and JSON area`);
  const { header, jsonText } = decodeLuks2Copy(region, at, which);
  return { header, meta: parseLuks2Json(jsonText, Number(size)), text: jsonText };
}

function asLuksError(e: unknown): LuksError {
  if (e instanceof LuksError) return e;
  throw e;
}

/** Reads and validates both copies; uses the valid one with the higher seqid (spec §2.1). */
export async function readLuks2(io: HeaderIo): Promise<Luks2State> {
  let primary: Copy | null = null;
  let primaryErr: LuksError | null = null;
  try {
    primary = await readCopy(io, 0, 'primary');
  } catch (e) {
    primaryErr = asLuksError(e);
  }
  // Where to look for the secondary: after the primary, else at every allowed size (spec §2.1).
  const offsets = primary ? [primary.header.hdrSize] : LUKS2_HDR_SIZES.map(BigInt);
  let secondary: Copy | null = null;
  let secondaryErr: LuksError | null = null;
  for (const off of offsets) {
    if (off + BigInt(LUKS2_BINARY_HEADER_SIZE) > io.size) {
      // Past the end: a fault when the primary says the copy is there; nothing found when scanning.
      if (primary) secondaryErr = new LuksError('LUKS_TRUNCATED', `secondary header at ${off} lies past the end of the device (${io.size} bytes)`);
      continue;
    }
    try {
      secondary = await readCopy(io, Number(off), 'secondary');
      break;
    } catch (e) {
      const err = asLuksError(e);
      // While scanning blindly, a missing magic says nothing; keep the first real fault.
      if (!secondaryErr || (secondaryErr.code === 'LUKS_BAD_MAGIC' && err.code !== 'LUKS_BAD_MAGIC')) secondaryErr = err;
    }
  }
  if (!primary && !secondary) {
    const p = primaryErr!;
    const s = secondaryErr;
    if (!s || s.code === 'LUKS_BAD_MAGIC') throw p;
    // Identical content faults (both copies carry the same bad JSON) keep their own code.
    const same = p.code === s.code && (p.code === 'LUKS_BAD_JSON' || p.code === 'LUKS_BAD_LAYOUT');
    throw new LuksError(same ? p.code : 'LUKS_BOTH_HEADERS_BAD', `both LUKS2 header copies are bad: ${p.message}; ${s.message}`);
  }
  const problems: string[] = [];
  if (primaryErr) problems.push(primaryErr.message);
  if (!secondary && secondaryErr) problems.push(secondaryErr.message);
  let chosen: Copy;
  if (primary && secondary) {
    chosen = secondary.header.seqid > primary.header.seqid ? secondary : primary;
    if (primary.header.seqid !== secondary.header.seqid) problems.push(`seqid differs: primary ${primary.header.seqid}, secondary ${secondary.header.seqid}`);
    else if (primary.text !== secondary.text || primary.header.uuid !== secondary.header.uuid) problems.push('copies differ at the same seqid');
  } else {
    chosen = (primary ?? secondary)!;
  }
  return { header: chosen.header, meta: chosen.meta, hdrSize: Number(chosen.header.hdrSize), needsRepair: problems.length > 0, problems };
}

/** Writes metadata as seqid+1 into both copies (secondary first), validating it first. */
export async function writeLuks2(io: HeaderIo, state: Luks2State, raw: JsonObject): Promise<Luks2State> {
  const text = JSON.stringify(raw);
  const meta = parseLuks2Json(text, state.hdrSize);
  const seqid = state.header.seqid + 1n;
  const both = encodeLuks2Copies({ hdrSize: state.hdrSize, seqid, label: state.header.label, uuid: state.header.uuid, subsystem: state.header.subsystem }, text);
  await io.write(state.hdrSize, both.subarray(state.hdrSize));
  await io.sync();
  await io.write(0, both.subarray(0, state.hdrSize));
  await io.sync();
  return { header: { ...state.header, seqid, hdrOffset: 0n, which: 'primary' }, meta, hdrSize: state.hdrSize, needsRepair: false, problems: [] };
}

/** The one crypt segment holding the data; anything else (reencryption in progress) is unsupported. */
export function dataSegment(meta: Luks2Metadata): Luks2Segment {
  if (meta.config.requirements.length) {
    throw new LuksError('LUKS_UNSUPPORTED_REQUIREMENT', `LUKS2 header requires ${meta.config.requirements.join(', ')} (unsupported; finish it with cryptsetup)`);
  }
  const crypt = meta.segments.filter((s) => s.type === 'crypt');
  if (meta.segments.length !== 1 || crypt.length !== 1) {
    throw new LuksError('LUKS_UNSUPPORTED_REQUIREMENT', `LUKS2 header has ${meta.segments.length} segments (${meta.segments.map((s) => s.type).join(', ')}); one crypt segment is supported`);
  }
  const seg = crypt[0]!;
  return seg;
}

function isHash(h: string): h is LuksHash {
  return (LUKS_HASHES as readonly string[]).includes(h);
}

function geometry(k: Luks2Keyslot): KeyslotGeometry {
  const what = `keyslot ${k.id}`;
  if (k.type !== 'luks2') throw new LuksError('LUKS_UNSUPPORTED_REQUIREMENT', `${what}: type ${JSON.stringify(k.type)} unsupported`);
  if (k.kdf.type === 'unknown') throw new LuksError('LUKS_UNKNOWN_KDF', `${what}: KDF ${JSON.stringify(k.kdf.name)} unknown`);
  if (k.afType !== 'luks1') throw new LuksError('LUKS_BAD_HEADER', `${what}: AF type ${JSON.stringify(k.afType)} unsupported`);
  if (!isHash(k.afHash)) throw new LuksError('LUKS_UNSUPPORTED_HASH', `${what}: AF hash ${JSON.stringify(k.afHash)} unsupported`);
  if (k.areaType !== 'raw') throw new LuksError('LUKS_BAD_HEADER', `${what}: area type ${JSON.stringify(k.areaType)} unsupported`);
  checkCipher(k.areaEncryption, k.areaKeySize, `${what} area`);
  if (k.afStripes !== LUKS_STRIPES) throw new LuksError('LUKS_BAD_HEADER', `${what}: AF stripes ${k.afStripes}, expected ${LUKS_STRIPES}`);
  return {
    what,
    kdf: k.kdf,
    areaKeyBytes: k.areaKeySize,
    areaOffset: Number(k.areaOffset),
    keyBytes: k.keySize,
    stripes: k.afStripes,
    afHash: k.afHash,
  };
}

/** Keyslots to try: the given one first, then priority high before normal; "ignore" only when given. */
function unlockOrder(meta: Luks2Metadata, preferred: number | undefined): number[] {
  if (preferred !== undefined) {
    if (!Number.isInteger(preferred) || preferred < 0 || preferred >= LUKS2_MAX_ID) {
      throw new LuksError('LUKS_KEYSLOT_OUT_OF_RANGE', `keyslot ${preferred} out of range 0..${LUKS2_MAX_ID - 1}`);
    }
    if (!meta.keyslots.some((k) => k.id === preferred)) throw new LuksError('LUKS_KEYSLOT_INACTIVE', `keyslot ${preferred} is not active`);
  }
  const rest = meta.keyslots
    .filter((k) => k.id !== preferred && k.priority > 0)
    .sort((a, b) => b.priority - a.priority || a.id - b.id)
    .map((k) => k.id);
  return preferred === undefined ? rest : [preferred, ...rest];
}

/** Tries keyslots within the per-attempt budget, verifies the segment's digest, returns the volume key (caller wipes). */
export async function luks2Unlock(
  io: HeaderIo,
  state: Luks2State,
  secret: Uint8Array,
  opts: UnlockAttempt,
): Promise<{ volumeKey: Uint8Array; keyslot: number }> {
  const meta = state.meta;
  const seg = dataSegment(meta);
  const limits = opts.limits ?? DEFAULT_KDF_LIMITS;
  return tryKeyslots(
    unlockOrder(meta, opts.keyslot),
    (id) => {
      const k = meta.keyslots.find((x) => x.id === id)!;
      const g = geometry(k);
      checkCipher(seg.encryption, k.keySize, `segment ${seg.id}`);
      const digest = meta.digests.find((d) => d.keyslots.includes(id) && d.segments.includes(seg.id));
      if (!digest) throw new LuksError('LUKS_BAD_HEADER', `keyslot ${id} has no digest for segment ${seg.id}`);
      if (digest.type !== 'pbkdf2' || !isHash(digest.hash)) throw new LuksError('LUKS_UNKNOWN_KDF', `digest ${digest.id}: ${digest.type}/${digest.hash} unsupported`);
      if (digest.digest.length < 16 || digest.digest.length > 64) throw new LuksError('LUKS_BAD_HEADER', `digest ${digest.id}: ${digest.digest.length} bytes`);
      const digestKdf: KdfParams = { type: 'pbkdf2', hash: digest.hash, iterations: digest.iterations, salt: digest.salt };
      checkKdfCost(digestKdf, limits, `digest ${digest.id}`);
      checkKdfCost(g.kdf, limits, g.what);
      const end = k.areaOffset + BigInt(afSectorBytes(k.keySize, k.afStripes));
      if (end > io.size) throw new LuksError('LUKS_BAD_LAYOUT', `keyslot ${id}: area ends at ${end}, past the end of the device (${io.size} bytes)`);
      return keyslotAttempt(io, g, secret, { what: `digest ${digest.id}`, kdf: digestKdf, digest: digest.digest }, limits, opts.signal);
    },
    limits,
    opts.signal,
  );
}

function kdfJson(p: KdfParams): JsonObject {
  const salt = Buffer.from(p.salt).toString('base64');
  return p.type === 'pbkdf2'
    ? { type: 'pbkdf2', hash: p.hash, iterations: p.iterations, salt }
    : { type: p.type, time: p.time, memory: p.memory, cpus: p.cpus, salt };
}

/** First 4096-aligned gap of `bytes` in the keyslots area, not overlapping any area except `ignoring`. */
function allocateArea(state: Luks2State, bytes: number, ignoring?: number): bigint {
  const start = 2n * BigInt(state.hdrSize);
  const end = start + state.meta.config.keyslotsSize;
  const used = state.meta.keyslots.filter((k) => k.id !== ignoring).map((k) => [k.areaOffset, k.areaOffset + k.areaSize] as const);
  used.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const size = BigInt(Math.ceil(bytes / 4096) * 4096);
  let at = start;
  for (const [s, e] of used) {
    if (at + size <= s) break;
    if (e > at) at = (e + 4095n) & ~4095n;
  }
  if (at + size > end) throw new LuksError('LUKS_KEYSLOTS_FULL', `no ${size}-byte gap left in the ${state.meta.config.keyslotsSize}-byte keyslots area`);
  return at;
}

/** The keyslot id to add: `want` when free and in range, else the lowest free one. */
export function luks2FreeKeyslot(state: Luks2State, want: number | undefined): number {
  const used = new Set(state.meta.keyslots.map((k) => k.id));
  if (want !== undefined) {
    if (!Number.isInteger(want) || want < 0 || want >= LUKS2_MAX_ID) throw new LuksError('LUKS_KEYSLOT_OUT_OF_RANGE', `keyslot ${want} out of range 0..${LUKS2_MAX_ID - 1}`);
    if (used.has(want)) throw new LuksError('LUKS_BAD_ARG', `keyslot ${want} is in use`);
    return want;
  }
  for (let i = 0; i < LUKS2_MAX_ID; i++) if (!used.has(i)) return i;
  throw new LuksError('LUKS_KEYSLOTS_FULL', `all ${LUKS2_MAX_ID} keyslots are in use`);
}

/**
 * Seals volumeKey into keyslot `id` in a newly allocated area, binds it to the
 * segment's digest, writes the area then both header copies; a keyslot with the
 * same id (change of passphrase) is replaced and its old area wiped afterwards.
 */
export async function luks2SetKeyslot(
  io: HeaderIo,
  state: Luks2State,
  id: number,
  volumeKey: Uint8Array,
  secret: Uint8Array,
  kdf: KdfOptions,
  limits: KdfLimits,
): Promise<Luks2State> {
  const seg = dataSegment(state.meta);
  const old = state.meta.keyslots.find((k) => k.id === id);
  const bytes = afSectorBytes(volumeKey.length, LUKS_STRIPES);
  let offset: bigint;
  try {
    offset = allocateArea(state, bytes, undefined);
  } catch (e) {
    // No free gap: a changed passphrase reuses its own area (not crash-safe, like cryptsetup's in-place fallback).
    if (!old) throw e;
    offset = allocateArea(state, bytes, id);
  }
  const params = kdfParamsFor(kdf, randomBytes(32));
  const size = BigInt(Math.ceil(bytes / 4096) * 4096);
  // As cryptsetup: the AF hash is the PBKDF2 hash (an argon2 keyslot's is sha256), so a keyslot written with
  // systemd-cryptenroll's pbkdf2/sha512 carries sha512 in both places as its own do.
  const afHash = params.type === 'pbkdf2' ? params.hash : 'sha256';
  const ksJson: JsonObject = {
    type: 'luks2',
    key_size: volumeKey.length,
    af: { type: 'luks1', stripes: LUKS_STRIPES, hash: afHash },
    area: { type: 'raw', offset: String(offset), size: String(size), encryption: XTS_PLAIN64, key_size: volumeKey.length },
    kdf: kdfJson(params),
  };
  const g: KeyslotGeometry = { what: `keyslot ${id}`, kdf: params, areaKeyBytes: volumeKey.length, areaOffset: Number(offset), keyBytes: volumeKey.length, stripes: LUKS_STRIPES, afHash };
  const material = await sealKeyslot(g, volumeKey, secret, limits);
  try {
    await io.write(Number(offset), material);
  } finally {
    material.fill(0);
  }
  const raw = cloneJson(state.meta.raw);
  (raw.keyslots as JsonObject)[String(id)] = ksJson;
  const digests = raw.digests as JsonObject;
  const digestId = state.meta.digests.find((d) => d.segments.includes(seg.id))!.id;
  const dj = digests[String(digestId)] as JsonObject;
  const list = (dj.keyslots as string[]).filter((k) => k !== String(id));
  list.push(String(id));
  dj.keyslots = list.sort((a, b) => Number(a) - Number(b));
  const next = await writeLuks2(io, state, raw);
  if (old && old.areaOffset !== offset) await io.write(Number(old.areaOffset), randomBytes(Number(old.areaSize)));
  await io.sync();
  return next;
}

/** Removes keyslot `id` from the metadata (and digests and tokens), then overwrites its area with random bytes. */
export async function luks2KillKeyslot(io: HeaderIo, state: Luks2State, id: number): Promise<Luks2State> {
  const k = state.meta.keyslots.find((x) => x.id === id);
  if (!k) throw new LuksError('LUKS_KEYSLOT_INACTIVE', `keyslot ${id} is not active`);
  const raw = cloneJson(state.meta.raw);
  delete (raw.keyslots as JsonObject)[String(id)];
  for (const group of [raw.digests, raw.tokens] as JsonObject[]) {
    for (const v of Object.values(group)) {
      const o = v as JsonObject;
      if (Array.isArray(o.keyslots)) o.keyslots = o.keyslots.filter((x) => x !== String(id));
    }
  }
  const next = await writeLuks2(io, state, raw);
  await io.write(Number(k.areaOffset), randomBytes(Number(k.areaSize)));
  await io.sync();
  return next;
}

/** Adds a token (validated as the metadata is rewritten); returns its id. */
export async function luks2AddToken(io: HeaderIo, state: Luks2State, token: JsonObject, want?: number): Promise<{ state: Luks2State; id: number }> {
  if (typeof token.type !== 'string' || !Array.isArray(token.keyslots)) {
    throw new LuksError('LUKS_BAD_TOKEN', 'a token needs "type" (string) and "keyslots" (array of keyslot id strings)');
  }
  const used = new Set(state.meta.tokens.map((t) => t.id));
  let id = want;
  if (id === undefined) {
    id = 0;
    while (id < LUKS2_MAX_ID && used.has(id)) id++;
  }
  if (!Number.isInteger(id) || id < 0 || id >= LUKS2_MAX_ID) throw new LuksError('LUKS_BAD_TOKEN', `token id ${id} out of range (or all ${LUKS2_MAX_ID} in use)`);
  if (used.has(id)) throw new LuksError('LUKS_BAD_TOKEN', `token ${id} exists`);
  let copy: JsonObject;
  try {
    // A cyclic object or a BigInt makes JSON.stringify throw a TypeError: refuse it as a bad token.
    checkJsonDepth(token, LUKS2_MAX_JSON_DEPTH - 2, 'token');
    copy = cloneJson(token);
  } catch (e) {
    throw new LuksError('LUKS_BAD_TOKEN', `token rejected: ${(e as Error).message}`, { cause: e });
  }
  const raw = cloneJson(state.meta.raw);
  (raw.tokens as JsonObject)[String(id)] = copy;
  try {
    return { state: await writeLuks2(io, state, raw), id };
  } catch (e) {
    if (e instanceof LuksError && e.code === 'LUKS_BAD_JSON') throw new LuksError('LUKS_BAD_TOKEN', `token rejected: ${e.message}`);
    throw e;
  }
}

export async function luks2RemoveToken(io: HeaderIo, state: Luks2State, id: number): Promise<Luks2State> {
  if (!state.meta.tokens.some((t) => t.id === id)) throw new LuksError('LUKS_TOKEN_NOT_FOUND', `token ${id} does not exist`);
  const raw = cloneJson(state.meta.raw);
  delete (raw.tokens as JsonObject)[String(id)];
  return writeLuks2(io, state, raw);
}

export interface Luks2FormatParams {
  readonly volumeSize: bigint;
  readonly keyBytes: 32 | 64;
  readonly sectorSize: 512 | 4096;
  readonly dataOffset?: bigint | undefined;
  readonly metadataSize?: number | undefined;
  readonly segmentSize?: bigint | 'dynamic' | undefined;
  readonly kdf: KdfOptions;
  readonly label?: string | undefined;
  readonly subsystem?: string | undefined;
  readonly digestIterations?: number | undefined;
}

/** A fresh LUKS2 header region (dataOffset bytes) with keyslot 0 holding a new volume key. */
export async function luks2Format(p: Luks2FormatParams, secret: Uint8Array): Promise<{ header: Uint8Array; volumeKey: Uint8Array; state: Luks2State }> {
  const hdrSize = p.metadataSize ?? 16384;
  if (!LUKS2_HDR_SIZES.includes(hdrSize)) throw new LuksError('LUKS_BAD_ARG', `metadataSize ${hdrSize} is not one of ${LUKS2_HDR_SIZES.join(', ')}`);
  if (p.sectorSize !== 512 && p.sectorSize !== 4096) throw new LuksError('LUKS_BAD_ARG', `sectorSize ${String(p.sectorSize)} must be 512 or 4096`);
  const dataOffset = p.dataOffset ?? 16n << 20n;
  // cryptsetup caps the keyslots area (the rest of a large data offset stays unused), and so does the parser.
  const keyslotsSpace = dataOffset - 2n * BigInt(hdrSize);
  const keyslotsSize = keyslotsSpace < LUKS2_MAX_KEYSLOTS_SIZE ? keyslotsSpace : LUKS2_MAX_KEYSLOTS_SIZE;
  const area = BigInt(Math.ceil(afSectorBytes(p.keyBytes, LUKS_STRIPES) / 4096) * 4096);
  if (dataOffset % 4096n !== 0n || keyslotsSize < area) {
    throw new LuksError('LUKS_BAD_ARG', `dataOffset ${dataOffset} must be a multiple of 4096 with room for metadata (${2 * hdrSize}) and one keyslot (${area})`);
  }
  if (dataOffset > 1n << 40n) throw new LuksError('LUKS_BAD_ARG', `dataOffset ${dataOffset} unreasonably large`);
  const dataBytes = p.volumeSize - dataOffset;
  if (dataBytes <= 0n || dataBytes % BigInt(p.sectorSize) !== 0n) {
    throw new LuksError('LUKS_BAD_ARG', `volume size ${p.volumeSize} must exceed dataOffset ${dataOffset} by a whole number of ${p.sectorSize}-byte sectors`);
  }
  const segSize = p.segmentSize ?? 'dynamic';
  if (segSize !== 'dynamic' && (segSize <= 0n || segSize > dataBytes || segSize % BigInt(p.sectorSize) !== 0n)) {
    throw new LuksError('LUKS_BAD_ARG', `segmentSize ${segSize} must be whole sectors within the ${dataBytes} data bytes`);
  }
  const digestIterations = p.digestIterations ?? 1000;
  if (!Number.isSafeInteger(digestIterations) || digestIterations < 1000) throw new LuksError('LUKS_BAD_ARG', 'digestIterations must be >= 1000');
  // Filled in place: new Uint8Array(randomBytes(n)) would leave the key in an unwiped Buffer.
  const volumeKey = randomFillSync(new Uint8Array(p.keyBytes));
  try {
    const dsalt = randomBytes(32);
    const digest = pbkdf2Sync(volumeKey, dsalt, digestIterations, 32, 'sha256');
    const raw: JsonObject = {
      keyslots: {},
      tokens: {},
      segments: {
        '0': { type: 'crypt', offset: String(dataOffset), size: segSize === 'dynamic' ? 'dynamic' : String(segSize), iv_tweak: '0', encryption: XTS_PLAIN64, sector_size: p.sectorSize },
      },
      digests: {
        '0': { type: 'pbkdf2', keyslots: [], segments: ['0'], hash: 'sha256', iterations: digestIterations, salt: dsalt.toString('base64'), digest: digest.toString('base64') },
      },
      config: { json_size: String(hdrSize - LUKS2_BINARY_HEADER_SIZE), keyslots_size: String(keyslotsSize) },
    };
    digest.fill(0);
    const header = new Uint8Array(Number(dataOffset));
    const io = await openHeaderIo(header, true);
    const text = JSON.stringify(raw);
    const label = p.label ?? '';
    const subsystem = p.subsystem ?? '';
    if (Buffer.byteLength(label, 'latin1') > 47 || Buffer.byteLength(subsystem, 'latin1') > 47) throw new LuksError('LUKS_BAD_ARG', 'label and subsystem hold at most 47 characters');
    header.set(encodeLuks2Copies({ hdrSize, seqid: 0n, label, uuid: randomUUID(), subsystem }, text));
    const empty = await readLuks2(io);
    const state = await luks2SetKeyslot(io, empty, 0, volumeKey, secret, p.kdf, DEFAULT_KDF_LIMITS);
    return { header, volumeKey, state };
  } catch (e) {
    volumeKey.fill(0);
    throw e;
  }
}
