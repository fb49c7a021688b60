/**
 * The authenticated manifest of an encrypted link, and `verify`. AES-XTS detects no tampering (IEEE 1619: no
 * integrity), so a backup chain needs its own check: at encryption every link gets a sidecar manifest,
 * `LINK.chain-manifest` (JSON, beside the link), holding
 *  - the link's identity: its VHD UUID, container, virtual size, block size, the parent it names (UUID, time
 *    stamp, name), and the volume (LUKS UUID, data offset, sector size);
 *  - SHA-256 of its metadata (the 512-byte footer and, for dynamic and differencing links, the 1024-byte dynamic
 *    header with the parent locator entries);
 *  - a tag of each block it holds, over the sector bitmap followed by the block's data, as they are in the file
 *    (a fixed link: each 2 MiB of its data);
 *  - an HMAC-SHA-256 over all of the above (RFC 2104).
 * Version 2 (what is written): a random 16-byte `salt` per manifest; HKDF-SHA-256 (RFC 5869) of the volume key,
 * salt the LUKS UUID, info "vhdcrypt chain manifest v2 " + the salt in hex, gives 64 bytes: the HMAC key, then the
 * AES-256 key of the block tags, which are GMAC (block-tag.ts; IV = the block index), about 4x cheaper than SHA-256
 * here. The salt gives every manifest its own keys, so a link sealed again (merge --seal, a re-encrypt under the
 * same volume key) never reuses a GMAC key and IV over other data. Version 1 (still read): no salt, the HMAC key
 * from info "vhdcrypt chain manifest v1", and each block's SHA-256. Either way only whoever can unseal the base's
 * vault secret can make or check one, and a manifest of another volume never verifies.
 * `verify` without a key checks structure (every link opens: footers, headers, BATs, locators, parent UUIDs; no
 * link but the base holds a block of the LUKS header region); with the key it checks every manifest and names
 * each changed, missing, added or swapped block by link and offset.
 */
import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { DEFAULT_BLOCK_SIZE, HUGE_PAGE_BYTES, hugePageView, openImage, parentSearch, SparseVhdImage, type DiskImage, type ParentSearchOptions } from '../../image/index.js';
import { publishNewFile } from '../../new-file.js';
import { isVhdcryptError } from '../../errors.js';
import { EngineError } from '../errors.js';
import { readLuksInfo, unlockImage, type UnlockImageOptions } from '../../volume/index.js';
import { blockTag, TagUnmasker } from '../pool/block-tag.js';

export const MANIFEST_SUFFIX = '.chain-manifest';
const MANIFEST_FORMAT = 'vhdcrypt-chain-manifest';
const HKDF_INFO_V1 = 'vhdcrypt chain manifest v1';
const HKDF_INFO_V2 = 'vhdcrypt chain manifest v2 ';
const SALT_BYTES = 16;
const SALT_HEX = /^[0-9a-f]{32}$/;
/** A manifest larger than this is refused before it is parsed (2^24 blocks of 80 bytes of JSON each, and then some). */
const MAX_MANIFEST_BYTES = 1536 * 1024 * 1024;

/** Where a link's manifest lives. */
export function manifestPath(link: string): string {
  return link + MANIFEST_SUFFIX;
}

export interface VolumeFacts {
  readonly luksUuid: string;
  readonly dataOffset: bigint;
  readonly sectorSize: number;
}

/** A link's digest: what the manifest records, without the MAC. */
export interface LinkDigest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly version: 1 | 2;
  /** Version 2: the 16 random bytes (hex) its keys are derived with. */
  readonly salt?: string;
  readonly link: {
    readonly uuid: string | null;
    readonly container: string;
    readonly virtualSize: string;
    readonly blockSize: number;
    readonly parent: { readonly uuid: string; readonly timestamp: number; readonly name: string } | null;
  };
  readonly volume: { readonly luksUuid: string; readonly dataOffset: string; readonly sectorSize: number };
  readonly metadataSha256: string;
  /**
   * The VHD UUID of the plaintext disk this link's chain now encrypts (the source of encrypt, the child of a
   * delta), when known: a delta names its plaintext parent by that UUID, so encrypt --parent-image can refuse a
   * parent image that encrypts another disk.
   */
  readonly sourceUuid?: string | null;
  /** [block index, tag (version 2) or SHA-256 (version 1) of bitmap + data], in block order. */
  readonly blocks: ReadonlyArray<readonly [number, string]>;
}

export interface Manifest extends LinkDigest {
  readonly mac: string;
}

/**
 * The keys of one manifest: version 2 (`salt` set) its HMAC key and block tag key, version 1 (`salt` null) the
 * volume's HMAC key alone (blocks are SHA-256). Whoever makes them wipes them (wipeManifestKeys).
 */
export interface ManifestKeys {
  readonly salt: string | null;
  readonly macKey: Uint8Array;
  readonly tagKey: Uint8Array | null;
}

/** The keys of a manifest with this salt (null: version 1) of a volume; the caller wipes them (wipeManifestKeys). */
export function manifestKeys(volumeKey: Uint8Array, luksUuid: string, salt: string | null): ManifestKeys {
  const uuid = Buffer.from(luksUuid, 'utf8');
  if (salt === null) return { salt, macKey: new Uint8Array(hkdfSync('sha256', volumeKey, uuid, HKDF_INFO_V1, 32)), tagKey: null };
  const okm = new Uint8Array(hkdfSync('sha256', volumeKey, uuid, HKDF_INFO_V2 + salt, 64));
  return { salt, macKey: okm.subarray(0, 32), tagKey: okm.subarray(32, 64) };
}

/** The keys of a new manifest: a fresh random salt (version 2). */
export function newManifestKeys(volumeKey: Uint8Array, luksUuid: string): ManifestKeys {
  return manifestKeys(volumeKey, luksUuid, randomBytes(SALT_BYTES).toString('hex'));
}

export function wipeManifestKeys(k: ManifestKeys): void {
  k.macKey.fill(0);
  k.tagKey?.fill(0);
}

function macOf(key: Uint8Array, d: LinkDigest): string {
  // The JSON of the digest with its fields in the order written: what is MACed is exactly what is stored.
  return createHmac('sha256', key).update(JSON.stringify(digestOnly(d)), 'utf8').digest('hex');
}

function digestOnly(d: LinkDigest): LinkDigest {
  // Version 1's fields exactly as it wrote them, so its manifests keep verifying.
  const rest = { link: d.link, volume: d.volume, metadataSha256: d.metadataSha256, sourceUuid: d.sourceUuid ?? null, blocks: d.blocks };
  return d.version === 1 ? { format: d.format, version: d.version, ...rest } : { format: d.format, version: d.version, salt: d.salt, ...rest };
}

/** A parsed manifest of a version this reads, with a well-formed salt; else null (whatever the JSON held). */
function manifestShape(m: unknown): Manifest | null {
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return null;
  const x = m as Partial<Manifest>;
  if (x.format !== MANIFEST_FORMAT || typeof x.mac !== 'string' || !Array.isArray(x.blocks)) return null;
  if (x.version === 1) return x.salt === undefined ? (x as Manifest) : null;
  if (x.version === 2) return typeof x.salt === 'string' && SALT_HEX.test(x.salt) ? (x as Manifest) : null;
  return null;
}

/** The keys a parsed manifest was made under (the caller wipes them). */
function keysOf(m: Manifest, volumeKey: Uint8Array, luksUuid: string): ManifestKeys {
  return manifestKeys(volumeKey, luksUuid, m.version === 2 ? m.salt! : null);
}

/** Two hex values equal, compared in constant time. */
function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length * 2 === a.length && y.length * 2 === b.length && timingSafeEqual(x, y);
}

/** True when the manifest's MAC verifies under its keys. */
function macVerifies(m: Manifest, keys: ManifestKeys): boolean {
  return sameHex(macOf(keys.macKey, m), m.mac);
}

/** The footer (and dynamic header) bytes of a link's file, as its metadata hash covers them. */
async function metadataHash(link: DiskImage): Promise<string> {
  const fh = await open(link.path, 'r');
  try {
    const size = (await fh.stat()).size;
    const h = createHash('sha256');
    const footer = Buffer.alloc(512);
    await fh.read(footer, 0, 512, size - 512);
    h.update(footer);
    if (link.footer && link.format !== 'vhd-fixed' && link.format !== 'raw') {
      const header = Buffer.alloc(1024);
      await fh.read(header, 0, 1024, Number(link.footer.dataOffset));
      h.update(header);
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/** A block's value under `keys`: its tag (version 2) or SHA-256 (version 1) of `parts`, one after the other. */
function blockValue(keys: ManifestKeys, index: number, parts: readonly Uint8Array[]): string {
  if (keys.tagKey !== null) return blockTag(keys.tagKey, index, parts);
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/**
 * The value (blockValue) of each block this link's own file holds, in block order. `known`: values already taken
 * under these keys, by virtual-disk offset (encrypt's workers tag each batch they crypt, and encrypt tags the LUKS
 * header region it wrote into a fixed output): a fixed link's pieces, or a dynamic link's blocks with every sector
 * present (the bitmap a known value covers), so only the others are read back.
 */
export async function blockValues(link: DiskImage, keys: ManifestKeys, known?: ReadonlyMap<bigint, string>): Promise<Array<[number, string]>> {
  const out: Array<[number, string]> = [];
  if (link instanceof SparseVhdImage) {
    const bs = link.blockSize!;
    const data = new Uint8Array(bs);
    for (let b = 0; b < link.blockCount; b++) {
      const map = await link.ownBitmap(b);
      if (map === null) continue;
      const taken = known?.get(BigInt(b) * BigInt(bs));
      if (taken !== undefined && map.every((x) => x === 0xff)) {
        out.push([b, taken]);
        continue;
      }
      await link.readOwnData(b, 0, data);
      out.push([b, blockValue(keys, b, [map, data])]);
    }
    return out;
  }
  // A fixed (or raw) link holds everything: its data in 2 MiB pieces.
  const size = Number(link.virtualSize);
  const chunk = new Uint8Array(DEFAULT_BLOCK_SIZE);
  for (let o = 0, b = 0; o < size; o += chunk.length, b++) {
    const taken = known?.get(BigInt(o));
    if (taken !== undefined) {
      out.push([b, taken]);
      continue;
    }
    const view = chunk.subarray(0, Math.min(chunk.length, size - o));
    await link.read(BigInt(o), view);
    out.push([b, blockValue(keys, b, [view])]);
  }
  return out;
}

/**
 * The tags under `keys` of the pieces [0, end) of a fresh image into which only `ranges` of `bytes` were written
 * (writeNewLuksRegion: the rest reads as zeros), by virtual-disk offset: no read back, and no page of `bytes`
 * outside the ranges touched. Each piece is assembled in one scratch buffer, so its tag is one call over contiguous
 * bytes (the addon's GHASH; parts of 64 KiB zeros cost node:crypto ~8 ms per MiB here). A byte changed in the file
 * afterwards, in a range or a hole, no longer matches.
 */
export function writtenRegionTags(keys: ManifestKeys, bytes: Uint8Array, ranges: ReadonlyArray<readonly [number, number]>, pieceBytes: number, end: number): Map<bigint, string> {
  if (keys.tagKey === null) throw new EngineError('ENGINE_BAD_ARGUMENT', 'writtenRegionTags: version 2 keys expected');
  const scratchBytes = Math.min(pieceBytes, end);
  const scratch = hugePageView(new ArrayBuffer(scratchBytes + HUGE_PAGE_BYTES), scratchBytes);
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out = new Map<bigint, string>();
  for (let p = 0; p < end; p += pieceBytes) {
    const stop = Math.min(p + pieceBytes, end);
    const piece = scratch.subarray(0, stop - p);
    piece.fill(0);
    for (const [s, e] of sorted) {
      const from = Math.max(s, p);
      const to = Math.min(e, stop);
      if (from < to) piece.set(bytes.subarray(from, to), from - p);
    }
    out.set(BigInt(p), blockTag(keys.tagKey, p / pieceBytes, [piece]));
  }
  return out;
}

/** The digest of a link as it is now, under `keys` (their version). */
export async function digestLink(link: DiskImage, vol: VolumeFacts, keys: ManifestKeys, known?: ReadonlyMap<bigint, string>): Promise<LinkDigest> {
  const h = link.dynamicHeader;
  return {
    format: MANIFEST_FORMAT,
    version: keys.salt === null ? 1 : 2,
    ...(keys.salt !== null ? { salt: keys.salt } : {}),
    link: {
      uuid: link.uuid ?? null,
      container: link.format,
      virtualSize: String(link.virtualSize),
      blockSize: link.blockSize ?? DEFAULT_BLOCK_SIZE,
      parent: link.format === 'vhd-differencing' && h ? { uuid: h.parentUniqueId, timestamp: h.parentTimestamp, name: h.parentUnicodeName } : null,
    },
    volume: { luksUuid: vol.luksUuid, dataOffset: String(vol.dataOffset), sectorSize: vol.sectorSize },
    metadataSha256: await metadataHash(link),
    blocks: await blockValues(link, keys, known),
  };
}

/**
 * Write (or replace) the manifest (version 2) of the link at `file`, opened on its own, under fresh keys of the
 * volume key; or under `taken.keys` (new keys of the same volume key, made by the caller, who wipes them) with the
 * tags already taken under them (`taken.tags`, as blockValues' `known`).
 */
export async function writeManifest(
  file: string,
  volumeKey: Uint8Array,
  vol: VolumeFacts,
  sourceUuid: string | null = null,
  taken?: { readonly keys: ManifestKeys; readonly tags: ReadonlyMap<bigint, string> },
): Promise<string> {
  if (taken && taken.keys.salt === null) throw new EngineError('ENGINE_BAD_ARGUMENT', 'writeManifest: a new manifest is version 2 (keys with a salt)');
  const link = await openImage(file, { format: 'vhd', withoutParent: true });
  const keys = taken?.keys ?? newManifestKeys(volumeKey, vol.luksUuid);
  try {
    const d = { ...(await digestLink(link, vol, keys, taken?.tags)), sourceUuid };
    const m: Manifest = { ...d, mac: macOf(keys.macKey, d) };
    const dest = manifestPath(file);
    await publishNewFile(dest, Buffer.from(JSON.stringify(m) + '\n', 'utf8'), { replace: true });
    return dest;
  } finally {
    if (!taken) wipeManifestKeys(keys);
    await link.close();
  }
}

// ---- verify ----

export interface VerifyOptions extends ParentSearchOptions, Omit<UnlockImageOptions, 'signal'> {
  /** Check every block against the manifests (needs the key: the vault secret, a passphrase or key file). */
  readonly blocks?: boolean;
}

export interface LinkReport {
  readonly path: string;
  readonly container: string;
  readonly uuid: string | null;
  /** Blocks checked against the manifest (null: not checked, no key). */
  readonly blocksChecked: number | null;
  /** Each problem found, naming the block and its offset in the virtual disk. */
  readonly problems: readonly string[];
}

export interface VerifyReport {
  readonly image: string;
  readonly ok: boolean;
  /** True when the blocks were checked against the manifests (with the key). */
  readonly blocksChecked: boolean;
  /** Problems of the chain as a whole (it does not open, its header region). */
  readonly problems: readonly string[];
  /** Top first. */
  readonly links: readonly LinkReport[];
}

/** Check an encrypted image (a chain of any depth): structure always, every block against its manifest with the key. */
export async function verifyImage(path: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: string[] = [];
  let top: DiskImage;
  try {
    top = await openImage(path, { format: 'vhd', ...parentSearch(opts) });
  } catch (e) {
    // The structure is what verify checks: an image that does not open is a finding, not a crash.
    if (isVhdcryptError(e)) return { image: path, ok: false, blocksChecked: false, problems: [`${e.code}: ${e.message}`], links: [] };
    throw e;
  }
  try {
    const links: DiskImage[] = [];
    for (let l: DiskImage | undefined = top; l; l = l.parent) links.push(l);
    const base = links[links.length - 1]!;
    const info = await readLuksInfo(base);
    if (!info) problems.push(`${base.path}: the base holds no LUKS header`);
    const reports: Array<{ path: string; container: string; uuid: string | null; blocksChecked: number | null; problems: string[] }> = links.map((l) => ({
      path: l.path,
      container: l.format,
      uuid: l.uuid ?? null,
      blocksChecked: null,
      problems: [],
    }));
    // Every link's LUKS header region is the base's: no link above it holds a block of it.
    if (info) {
      for (let i = 0; i < links.length - 1; i++) {
        const l = links[i]!;
        if (!(l instanceof SparseVhdImage)) continue;
        const bs = BigInt(l.blockSize!);
        for (let b = 0; BigInt(b) * bs < info.dataOffset && b < l.blockCount; b++) {
          if (l.ownBlockSector(b) !== null) reports[i]!.problems.push(`block ${b} (offset ${BigInt(b) * bs}) lies in the LUKS header region, which only the base may hold`);
        }
      }
    }
    const withKey = opts.blocks === true || opts.passphraseFile !== undefined || opts.keyFile !== undefined || opts.passphrase !== undefined;
    if (withKey && info) {
      // Each manifest has its own keys (its salt): the volume key is kept until every link is checked.
      const unlocked = await unlockImage(top, opts);
      try {
        const vol = { luksUuid: info.uuid, dataOffset: info.dataOffset, sectorSize: info.sectorSize };
        for (let i = 0; i < links.length; i++) {
          const r = reports[i]!;
          r.blocksChecked = await checkLink(links[i]!, unlocked.volumeKey, vol, r.problems);
        }
      } finally {
        unlocked.volumeKey.fill(0);
      }
    }
    const ok = problems.length === 0 && reports.every((r) => r.problems.length === 0);
    return { image: path, ok, blocksChecked: withKey && info !== null, problems, links: reports };
  } finally {
    await top.close();
  }
}

/** Check one link against its manifest; returns the number of blocks compared. */
async function checkLink(link: DiskImage, volumeKey: Uint8Array, vol: VolumeFacts, problems: string[]): Promise<number> {
  const file = manifestPath(link.path);
  let parsed: unknown;
  try {
    const fh = await open(file, 'r');
    try {
      const size = (await fh.stat()).size;
      if (size > MAX_MANIFEST_BYTES) {
        problems.push(`${file}: ${size} bytes is too large for a manifest`);
        return 0;
      }
    } finally {
      await fh.close();
    }
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    problems.push((e as NodeJS.ErrnoException).code === 'ENOENT' ? `no manifest (${file})` : `manifest ${file} cannot be read: ${e instanceof Error ? e.message : String(e)}`);
    return 0;
  }
  const m = manifestShape(parsed);
  if (m === null) {
    problems.push(`manifest ${file} is not a vhdcrypt chain manifest`);
    return 0;
  }
  const keys = keysOf(m, volumeKey, vol.luksUuid);
  try {
    if (!macVerifies(m, keys)) {
      problems.push(`manifest ${file}: its MAC does not verify (edited, or made under another volume key)`);
      return 0;
    }
    return await compareLink(link, m, keys, vol, problems);
  } finally {
    wipeManifestKeys(keys);
  }
}

/** Compare a link with its verified manifest, under the manifest's keys; returns the number of blocks compared. */
async function compareLink(link: DiskImage, m: Manifest, keys: ManifestKeys, vol: VolumeFacts, problems: string[]): Promise<number> {
  const now = await digestLink(link, vol, keys);
  if (JSON.stringify(now.link) !== JSON.stringify(m.link) || JSON.stringify(now.volume) !== JSON.stringify(m.volume)) {
    problems.push(`the link's identity (UUID, sizes, parent or volume) differs from its manifest's`);
  }
  if (now.metadataSha256 !== m.metadataSha256) problems.push(`the link's footer or dynamic header differs from its manifest's`);
  const bs = BigInt(now.link.blockSize);
  const where = (b: number) => `block ${b} (offset ${BigInt(b) * bs})`;
  const expected = new Map<number, string>(m.blocks.map(([b, h]) => [b, h]));
  const held = new Map<number, string>(now.blocks.map(([b, h]) => [b, h]));
  // Which block's data a mismatched block holds: a SHA-256 names its data wherever it lies; a tag is bound to its
  // block's IV, so both sides are compared without it (TagUnmasker). Built at the first mismatch only.
  const unmasker = keys.tagKey !== null ? new TagUnmasker(keys.tagKey) : null;
  const dataOf = (b: number, v: string) => (unmasker ? unmasker.unmask(b, v) : v);
  let byData: Map<string, number> | null = null;
  try {
    for (const [b, h] of now.blocks) {
      const w = expected.get(b);
      // In constant time: verify tells whether a block's tag matches and nothing more (how much of a GMAC tag
      // matched would say something of its hash key).
      if (w !== undefined && sameHex(w, h)) continue;
      byData ??= new Map(m.blocks.map(([x, v]) => [dataOf(x, v) ?? '', x]));
      const other = byData.get(dataOf(b, h) ?? '');
      if (other !== undefined && other !== b) problems.push(`${where(b)} holds the data of ${where(other)} (blocks swapped or moved)`);
      else if (w === undefined) problems.push(`${where(b)} is not in the manifest (added)`);
      else problems.push(`${where(b)} changed`);
    }
  } finally {
    unmasker?.close();
  }
  for (const [b] of m.blocks) if (!held.has(b)) problems.push(`${where(b)} is missing (its BAT entry is gone)`);
  return now.blocks.length;
}

/**
 * The plaintext disk UUID a link's manifest records, once its MAC verifies under the volume key; null when the link
 * has no manifest or it records none. A manifest that does not verify is refused (ENGINE_VERIFY_FAILED).
 */
export async function sealedSourceUuid(file: string, volumeKey: Uint8Array, luksUuid: string): Promise<string | null> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(manifestPath(file), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new EngineError('ENGINE_VERIFY_FAILED', `${manifestPath(file)}: not a readable manifest`, { cause: e });
  }
  const m = manifestShape(parsed);
  if (m === null) throw new EngineError('ENGINE_VERIFY_FAILED', `${manifestPath(file)}: not a vhdcrypt chain manifest`);
  const keys = keysOf(m, volumeKey, luksUuid);
  try {
    if (!macVerifies(m, keys)) throw new EngineError('ENGINE_VERIFY_FAILED', `${manifestPath(file)}: its MAC does not verify`);
  } finally {
    wipeManifestKeys(keys);
  }
  return typeof m.sourceUuid === 'string' ? m.sourceUuid : null;
}
