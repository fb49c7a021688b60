/**
 * LUKS2 JSON metadata (spec §3): parsed into typed, validated views while the
 * raw object is kept so that fields we do not interpret survive a rewrite.
 */
import { LuksError } from './errors.js';
import { LUKS_HASHES, type KdfParams, type LuksHash } from './kdf.js';
import { afSectorBytes } from './af-splitter.js';
import { LUKS2_BINARY_HEADER_SIZE } from './luks2-binary-header.js';
import { LUKS2_MAX_KEYSLOTS_SIZE } from './on-disk.js';

/** The metadata as it is in JSON (u64 values are decimal strings, spec §3). */
export type JsonObject = { [k: string]: JsonValue };
export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;

/** Ids of keyslots, tokens, segments, digests run 0..31 in cryptsetup. */
export const LUKS2_MAX_ID = 32;

/**
 * Deepest nesting accepted (json-c, cryptsetup's parser, stops at 32). Deeper
 * JSON would blow the stack of the recursive JSON.stringify on the next write.
 */
export const LUKS2_MAX_JSON_DEPTH = 32;

export type Luks2Kdf = KdfParams | { readonly type: 'unknown'; readonly name: string };

export interface Luks2Keyslot {
  readonly id: number;
  readonly type: string;
  readonly keySize: number;
  /** 0 ignore, 1 normal, 2 high (spec §3.2). */
  readonly priority: number;
  readonly afType: string;
  readonly afStripes: number;
  readonly afHash: string;
  readonly areaType: string;
  readonly areaOffset: bigint;
  readonly areaSize: bigint;
  readonly areaEncryption: string;
  readonly areaKeySize: number;
  readonly kdf: Luks2Kdf;
}

export interface Luks2Segment {
  readonly id: number;
  readonly type: string;
  readonly offset: bigint;
  readonly size: bigint | 'dynamic';
  readonly ivTweak: bigint;
  readonly encryption: string;
  readonly sectorSize: number;
  readonly flags: readonly string[];
}

export interface Luks2Digest {
  readonly id: number;
  readonly type: string;
  readonly keyslots: readonly number[];
  readonly segments: readonly number[];
  readonly hash: string;
  readonly iterations: number;
  readonly salt: Uint8Array;
  readonly digest: Uint8Array;
}

/** A token as stored (type, keyslots and whatever else its type carries). */
export interface LuksToken {
  readonly id: number;
  readonly type: string;
  readonly keyslots: readonly number[];
  readonly json: Readonly<JsonObject>;
}

export interface Luks2Config {
  readonly jsonSize: bigint;
  readonly keyslotsSize: bigint;
  readonly flags: readonly string[];
  readonly requirements: readonly string[];
}

export interface Luks2Metadata {
  readonly raw: JsonObject;
  readonly keyslots: readonly Luks2Keyslot[];
  readonly segments: readonly Luks2Segment[];
  readonly digests: readonly Luks2Digest[];
  readonly tokens: readonly LuksToken[];
  readonly config: Luks2Config;
}

const bad = (msg: string) => new LuksError('LUKS_BAD_JSON', msg);

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, where: string): JsonObject {
  if (!isObject(v)) throw bad(`${where}: expected an object`);
  return v;
}

function str(o: JsonObject, k: string, where: string): string {
  const v = o[k];
  if (typeof v !== 'string') throw bad(`${where}.${k}: expected a string`);
  return v;
}

function int(o: JsonObject, k: string, where: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${where}.${k}: expected an integer ${min}..${max}`);
  return v;
}

/** u64 as a decimal string (spec §3: "string-encoded 64-bit integers"). */
export function u64(o: JsonObject, k: string, where: string): bigint {
  const v = o[k];
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,19})$/.test(v) || BigInt(v) > 0xffff_ffff_ffff_ffffn) {
    throw bad(`${where}.${k}: expected a decimal string of a 64-bit unsigned integer`);
  }
  return BigInt(v);
}

function b64(o: JsonObject, k: string, where: string): Uint8Array {
  const v = str(o, k, where);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(v) || v.length % 4 !== 0) throw bad(`${where}.${k}: not base64`);
  return new Uint8Array(Buffer.from(v, 'base64'));
}

function idList(o: JsonObject, k: string, where: string): number[] {
  const v = o[k];
  if (!Array.isArray(v)) throw bad(`${where}.${k}: expected an array of ids`);
  return v.map((x, i) => parseId(x, `${where}.${k}[${i}]`));
}

function parseId(x: unknown, where: string): number {
  if (typeof x !== 'string' || !/^(0|[1-9][0-9]?)$/.test(x) || Number(x) >= LUKS2_MAX_ID) throw bad(`${where}: id ${JSON.stringify(x)} not 0..${LUKS2_MAX_ID - 1}`);
  return Number(x);
}

function entries(o: JsonObject, where: string): Array<[number, JsonObject]> {
  return Object.keys(o).map((k) => [parseId(k, `${where} key`), obj(o[k], `${where}.${k}`)] as [number, JsonObject]);
}

function isHash(h: string): h is LuksHash {
  return (LUKS_HASHES as readonly string[]).includes(h);
}

function parseKdf(k: JsonObject, where: string): Luks2Kdf {
  const type = str(k, 'type', where);
  if (type === 'pbkdf2') {
    const hash = str(k, 'hash', where);
    // An unsupported hash is kept as an unknown KDF: dump shows it, unlock refuses that slot.
    if (!isHash(hash)) return { type: 'unknown', name: `pbkdf2-${hash}` };
    return { type, hash, iterations: int(k, 'iterations', where, 1), salt: b64(k, 'salt', where) };
  }
  if (type === 'argon2i' || type === 'argon2id') {
    return { type, time: int(k, 'time', where, 1), memory: int(k, 'memory', where, 1), cpus: int(k, 'cpus', where, 1), salt: b64(k, 'salt', where) };
  }
  return { type: 'unknown', name: type };
}

function parseKeyslot(id: number, o: JsonObject): Luks2Keyslot {
  const w = `keyslots.${id}`;
  const type = str(o, 'type', w);
  const area = obj(o.area, `${w}.area`);
  const priority = o.priority === undefined ? 1 : int(o, 'priority', w, 0, 2);
  const common = {
    id,
    type,
    keySize: int(o, 'key_size', w, 1, 512),
    priority,
    areaType: str(area, 'type', `${w}.area`),
    areaOffset: u64(area, 'offset', `${w}.area`),
    areaSize: u64(area, 'size', `${w}.area`),
  };
  if (type !== 'luks2') {
    // Other keyslot types (e.g. "reencrypt") carry no AF or KDF; they keep their area and cannot unlock.
    return { ...common, afType: '', afStripes: 0, afHash: '', areaEncryption: '', areaKeySize: 0, kdf: { type: 'unknown', name: `keyslot type ${type}` } };
  }
  const af = obj(o.af, `${w}.af`);
  return {
    ...common,
    afType: str(af, 'type', `${w}.af`),
    afStripes: int(af, 'stripes', `${w}.af`, 1, 65536),
    afHash: str(af, 'hash', `${w}.af`),
    areaEncryption: str(area, 'encryption', `${w}.area`),
    areaKeySize: int(area, 'key_size', `${w}.area`, 1, 512),
    kdf: parseKdf(obj(o.kdf, `${w}.kdf`), `${w}.kdf`),
  };
}

function parseSegment(id: number, o: JsonObject): Luks2Segment {
  const w = `segments.${id}`;
  const size = o.size === 'dynamic' ? 'dynamic' : u64(o, 'size', w);
  const type = str(o, 'type', w);
  const crypt = type === 'crypt';
  const sectorSize = crypt ? int(o, 'sector_size', w, 512, 4096) : 512;
  if (crypt && (sectorSize & (sectorSize - 1)) !== 0) throw bad(`${w}.sector_size ${sectorSize} is not a power of two`);
  const flags = o.flags === undefined ? [] : o.flags;
  if (!Array.isArray(flags) || !flags.every((f) => typeof f === 'string')) throw bad(`${w}.flags: expected strings`);
  return {
    id,
    type,
    offset: u64(o, 'offset', w),
    size,
    ivTweak: crypt ? u64(o, 'iv_tweak', w) : 0n,
    encryption: crypt ? str(o, 'encryption', w) : '',
    sectorSize,
    flags: flags as string[],
  };
}

function parseDigest(id: number, o: JsonObject): Luks2Digest {
  const w = `digests.${id}`;
  return {
    id,
    type: str(o, 'type', w),
    keyslots: idList(o, 'keyslots', w),
    segments: idList(o, 'segments', w),
    hash: str(o, 'hash', w),
    iterations: int(o, 'iterations', w, 1),
    salt: b64(o, 'salt', w),
    digest: b64(o, 'digest', w),
  };
}

function parseToken(id: number, o: JsonObject): LuksToken {
  const w = `tokens.${id}`;
  return { id, type: str(o, 'type', w), keyslots: idList(o, 'keyslots', w), json: o };
}

function parseConfig(o: JsonObject): Luks2Config {
  const flags = o.flags === undefined ? [] : o.flags;
  if (!Array.isArray(flags) || !flags.every((f) => typeof f === 'string')) throw bad('config.flags: expected strings');
  let requirements: string[] = [];
  if (o.requirements !== undefined) {
    const m = obj(o.requirements, 'config.requirements').mandatory ?? [];
    if (!Array.isArray(m) || !m.every((f) => typeof f === 'string')) throw bad('config.requirements.mandatory: expected strings');
    requirements = m as string[];
  }
  return { jsonSize: u64(o, 'json_size', 'config'), keyslotsSize: u64(o, 'keyslots_size', 'config'), flags: flags as string[], requirements };
}

const layoutErr = (msg: string) => new LuksError('LUKS_BAD_LAYOUT', msg);

/** Areas inside the keyslots area, no overlaps; segments after all metadata (spec §3.1, §3.2, §3.3). */
function checkLayout(m: Omit<Luks2Metadata, 'raw'>, hdrSize: number): void {
  const metaStart = 2n * BigInt(hdrSize);
  const ksSize = m.config.keyslotsSize;
  if (m.config.jsonSize !== BigInt(hdrSize - LUKS2_BINARY_HEADER_SIZE)) {
    throw bad(`config.json_size ${m.config.jsonSize} does not match hdr_size ${hdrSize} - 4096`);
  }
  if (ksSize % 4096n !== 0n) throw layoutErr(`config.keyslots_size ${ksSize} is not a multiple of 4096`);
  if (ksSize > LUKS2_MAX_KEYSLOTS_SIZE) throw layoutErr(`config.keyslots_size ${ksSize} exceeds the ${LUKS2_MAX_KEYSLOTS_SIZE}-byte maximum`);
  const metaEnd = metaStart + ksSize;
  const spans: Array<[string, bigint, bigint]> = [];
  const claim = (what: string, start: bigint, end: bigint) => {
    for (const [w, s, e] of spans) if (start < e && s < end) throw layoutErr(`${what} [${start}, ${end}) overlaps ${w} [${s}, ${e})`);
    spans.push([what, start, end]);
  };
  for (const k of m.keyslots) {
    const end = k.areaOffset + k.areaSize;
    if (k.areaOffset < metaStart || end > metaEnd) {
      throw layoutErr(`keyslot ${k.id} area [${k.areaOffset}, ${end}) lies outside the keyslots area [${metaStart}, ${metaEnd})`);
    }
    if (k.areaSize < BigInt(afSectorBytes(k.keySize, k.afStripes))) {
      throw layoutErr(`keyslot ${k.id} area of ${k.areaSize} bytes is smaller than its ${afSectorBytes(k.keySize, k.afStripes)} bytes of key material`);
    }
    claim(`keyslot ${k.id} area`, k.areaOffset, end);
  }
  spans.length = 0;
  // Backup segments of a reencryption describe old/new placements and overlap by design.
  for (const s of m.segments.filter((x) => !x.flags.some((f) => f.startsWith('backup-')))) {
    if (s.offset < metaEnd) throw layoutErr(`segment ${s.id} at ${s.offset} overlaps the metadata and keyslots ending at ${metaEnd}`);
    if (s.offset % 512n !== 0n) throw layoutErr(`segment ${s.id} offset ${s.offset} is not 512-byte aligned`);
    if (s.size !== 'dynamic') {
      if (s.size % BigInt(s.sectorSize) !== 0n) throw layoutErr(`segment ${s.id} size ${s.size} is not a whole number of ${s.sectorSize}-byte sectors`);
      if (s.offset + s.size > 0xffff_ffff_ffff_ffffn) throw layoutErr(`segment ${s.id} ends past 2^64`);
    }
    claim(`segment ${s.id}`, s.offset, s.size === 'dynamic' ? 0xffff_ffff_ffff_ffffn : s.offset + s.size);
  }
}

/** Parses and validates the JSON text of one header copy. */
export function parseLuks2Json(text: string, hdrSize: number): Luks2Metadata {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new LuksError('LUKS_BAD_JSON', `metadata is not JSON (${(e as Error).message})`);
  }
  checkJsonDepth(v, LUKS2_MAX_JSON_DEPTH, 'metadata');
  const raw = obj(v, 'metadata');
  const keyslots = entries(obj(raw.keyslots, 'keyslots'), 'keyslots').map(([id, o]) => parseKeyslot(id, o));
  const segments = entries(obj(raw.segments, 'segments'), 'segments').map(([id, o]) => parseSegment(id, o));
  const digests = entries(obj(raw.digests, 'digests'), 'digests').map(([id, o]) => parseDigest(id, o));
  const tokens = entries(obj(raw.tokens, 'tokens'), 'tokens').map(([id, o]) => parseToken(id, o));
  const config = parseConfig(obj(raw.config, 'config'));
  const ks = new Set(keyslots.map((k) => k.id));
  const sg = new Set(segments.map((s) => s.id));
  for (const d of digests) {
    for (const k of d.keyslots) if (!ks.has(k)) throw bad(`digests.${d.id} names keyslot ${k}, which does not exist`);
    for (const s of d.segments) if (!sg.has(s)) throw bad(`digests.${d.id} names segment ${s}, which does not exist`);
  }
  for (const t of tokens) for (const k of t.keyslots) if (!ks.has(k)) throw bad(`tokens.${t.id} names keyslot ${k}, which does not exist`);
  const m = { keyslots, segments, digests, tokens, config };
  checkLayout(m, hdrSize);
  return { raw, ...m };
}

/** Throws LUKS_BAD_JSON when objects/arrays nest deeper than `max` (checked without recursion). */
export function checkJsonDepth(v: unknown, max: number, what: string): void {
  const stack: Array<[unknown, number]> = [[v, 1]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!;
    if (typeof x !== 'object' || x === null) continue;
    if (depth > max) throw bad(`${what}: JSON nested deeper than ${max} levels`);
    for (const child of Object.values(x)) stack.push([child, depth + 1]);
  }
}

/** Deep copy of the raw JSON for editing. */
export function cloneJson(o: JsonObject): JsonObject {
  return JSON.parse(JSON.stringify(o)) as JsonObject;
}
