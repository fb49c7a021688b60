/**
 * The authenticated manifest of an encrypted link, and `verify`. AES-XTS detects no tampering (IEEE 1619: no
 * integrity), so a backup chain needs its own check: at encryption every link gets a sidecar manifest,
 * `LINK.chain-manifest` (JSON, beside the link), holding
 *  - the link's identity: its VHD UUID, container, virtual size, block size, the parent it names (UUID, time
 *    stamp, name), and the volume (LUKS UUID, data offset, sector size);
 *  - SHA-256 of its metadata (the 512-byte footer and, for dynamic and differencing links, the 1024-byte dynamic
 *    header with the parent locator entries);
 *  - SHA-256 of each block it holds: the sector bitmap followed by the block's data, as they are in the file
 *    (a fixed link: each 2 MiB of its data);
 *  - an HMAC-SHA-256 over all of the above (RFC 2104), keyed by HKDF-SHA-256 (RFC 5869) of the volume key, salt
 *    the LUKS UUID, info "vhdcrypt chain manifest v1": so only whoever can unseal the base's vault secret can make
 *    or check one, and a manifest of another volume never verifies.
 * `verify` without a key checks structure (every link opens: footers, headers, BATs, locators, parent UUIDs; no
 * link but the base holds a block of the LUKS header region); with the key it checks every manifest and names
 * each changed, missing, added or swapped block by link and offset.
 */
import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { DEFAULT_BLOCK_SIZE, openImage, parentSearch, SparseVhdImage, type DiskImage, type ParentSearchOptions } from '../../image/index.js';
import { publishNewFile } from '../../new-file.js';
import { isVhdcryptError } from '../../errors.js';
import { EngineError } from '../errors.js';
import { readLuksInfo, unlockImage, type UnlockImageOptions } from '../../volume/index.js';

export const MANIFEST_SUFFIX = '.chain-manifest';
const MANIFEST_FORMAT = 'vhdcrypt-chain-manifest';
const HKDF_INFO = 'vhdcrypt chain manifest v1';
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
  readonly version: 1;
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
  /** [block index, SHA-256 of bitmap + data], in block order. */
  readonly blocks: ReadonlyArray<readonly [number, string]>;
}

export interface Manifest extends LinkDigest {
  readonly mac: string;
}

/** The MAC key of a volume's manifests (the caller wipes it). */
function manifestKey(volumeKey: Uint8Array, luksUuid: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', volumeKey, Buffer.from(luksUuid, 'utf8'), HKDF_INFO, 32));
}

function macOf(key: Uint8Array, d: LinkDigest): string {
  // The JSON of the digest with its fields in the order written: what is MACed is exactly what is stored.
  return createHmac('sha256', key).update(JSON.stringify(digestOnly(d)), 'utf8').digest('hex');
}

function digestOnly(d: LinkDigest): LinkDigest {
  return { format: d.format, version: d.version, link: d.link, volume: d.volume, metadataSha256: d.metadataSha256, sourceUuid: d.sourceUuid ?? null, blocks: d.blocks };
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

/**
 * SHA-256 of each block this link's own file holds, in block order. `known`: the hashes of a fixed link's pieces
 * already taken as they were written (by virtual-disk offset; encrypt's workers hash each batch they write), so only
 * the others are read back.
 */
export async function blockHashes(link: DiskImage, known?: ReadonlyMap<bigint, string>): Promise<Array<[number, string]>> {
  const out: Array<[number, string]> = [];
  if (link instanceof SparseVhdImage) {
    const bs = link.blockSize!;
    const data = new Uint8Array(bs);
    for (let b = 0; b < link.blockCount; b++) {
      const map = await link.ownBitmap(b);
      if (map === null) continue;
      await link.readOwnData(b, 0, data);
      out.push([b, createHash('sha256').update(map).update(data).digest('hex')]);
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
    out.push([b, createHash('sha256').update(view).digest('hex')]);
  }
  return out;
}

/** The digest of a link as it is now. */
export async function digestLink(link: DiskImage, vol: VolumeFacts, known?: ReadonlyMap<bigint, string>): Promise<LinkDigest> {
  const h = link.dynamicHeader;
  return {
    format: MANIFEST_FORMAT,
    version: 1,
    link: {
      uuid: link.uuid ?? null,
      container: link.format,
      virtualSize: String(link.virtualSize),
      blockSize: link.blockSize ?? DEFAULT_BLOCK_SIZE,
      parent: link.format === 'vhd-differencing' && h ? { uuid: h.parentUniqueId, timestamp: h.parentTimestamp, name: h.parentUnicodeName } : null,
    },
    volume: { luksUuid: vol.luksUuid, dataOffset: String(vol.dataOffset), sectorSize: vol.sectorSize },
    metadataSha256: await metadataHash(link),
    blocks: await blockHashes(link, known),
  };
}

/**
 * Write (or replace) the manifest of the link at `file`, opened on its own, under the volume key; `known` as for
 * blockHashes.
 */
export async function writeManifest(file: string, volumeKey: Uint8Array, vol: VolumeFacts, sourceUuid: string | null = null, known?: ReadonlyMap<bigint, string>): Promise<string> {
  const link = await openImage(file, { format: 'vhd', withoutParent: true });
  const key = manifestKey(volumeKey, vol.luksUuid);
  try {
    const d = { ...(await digestLink(link, vol, known)), sourceUuid };
    const m: Manifest = { ...d, mac: macOf(key, d) };
    const dest = manifestPath(file);
    await publishNewFile(dest, Buffer.from(JSON.stringify(m) + '\n', 'utf8'), { replace: true });
    return dest;
  } finally {
    key.fill(0);
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
      const unlocked = await unlockImage(top, opts);
      const key = manifestKey(unlocked.volumeKey, info.uuid);
      unlocked.volumeKey.fill(0);
      try {
        const vol = { luksUuid: info.uuid, dataOffset: info.dataOffset, sectorSize: info.sectorSize };
        for (let i = 0; i < links.length; i++) {
          const r = reports[i]!;
          r.blocksChecked = await checkLink(links[i]!, key, vol, r.problems);
        }
      } finally {
        key.fill(0);
      }
    }
    const ok = problems.length === 0 && reports.every((r) => r.problems.length === 0);
    return { image: path, ok, blocksChecked: withKey && info !== null, problems, links: reports };
  } finally {
    await top.close();
  }
}

/** Check one link against its manifest; returns the number of blocks compared. */
async function checkLink(link: DiskImage, key: Uint8Array, vol: VolumeFacts, problems: string[]): Promise<number> {
  const file = manifestPath(link.path);
  let m: Manifest;
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
    m = JSON.parse(await readFile(file, 'utf8')) as Manifest;
  } catch (e) {
    problems.push((e as NodeJS.ErrnoException).code === 'ENOENT' ? `no manifest (${file})` : `manifest ${file} cannot be read: ${e instanceof Error ? e.message : String(e)}`);
    return 0;
  }
  if (m === null || typeof m !== 'object' || m.format !== MANIFEST_FORMAT || m.version !== 1 || typeof m.mac !== 'string' || !Array.isArray(m.blocks)) {
    problems.push(`manifest ${file} is not a vhdcrypt chain manifest`);
    return 0;
  }
  const want = Buffer.from(macOf(key, m), 'hex');
  const got = Buffer.from(m.mac, 'hex');
  if (got.length !== want.length || !timingSafeEqual(got, want)) {
    problems.push(`manifest ${file}: its MAC does not verify (edited, or made under another volume key)`);
    return 0;
  }
  const now = await digestLink(link, vol);
  if (JSON.stringify(now.link) !== JSON.stringify(m.link) || JSON.stringify(now.volume) !== JSON.stringify(m.volume)) {
    problems.push(`the link's identity (UUID, sizes, parent or volume) differs from its manifest's`);
  }
  if (now.metadataSha256 !== m.metadataSha256) problems.push(`the link's footer or dynamic header differs from its manifest's`);
  const bs = BigInt(now.link.blockSize);
  const where = (b: number) => `block ${b} (offset ${BigInt(b) * bs})`;
  const expected = new Map<number, string>(m.blocks.map(([b, h]) => [b, h]));
  const byHash = new Map<string, number>(m.blocks.map(([b, h]) => [h, b]));
  const held = new Map<number, string>(now.blocks.map(([b, h]) => [b, h]));
  for (const [b, h] of now.blocks) {
    const w = expected.get(b);
    if (w === h) continue;
    const other = byHash.get(h);
    if (other !== undefined && other !== b) problems.push(`${where(b)} holds the data of ${where(other)} (blocks swapped or moved)`);
    else if (w === undefined) problems.push(`${where(b)} is not in the manifest (added)`);
    else problems.push(`${where(b)} changed`);
  }
  for (const [b] of m.blocks) if (!held.has(b)) problems.push(`${where(b)} is missing (its BAT entry is gone)`);
  return now.blocks.length;
}

/**
 * The plaintext disk UUID a link's manifest records, once its MAC verifies under the volume key; null when the link
 * has no manifest or it records none. A manifest that does not verify is refused (ENGINE_VERIFY_FAILED).
 */
export async function sealedSourceUuid(file: string, volumeKey: Uint8Array, luksUuid: string): Promise<string | null> {
  let m: Manifest;
  try {
    m = JSON.parse(await readFile(manifestPath(file), 'utf8')) as Manifest;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new EngineError('ENGINE_VERIFY_FAILED', `${manifestPath(file)}: not a readable manifest`, { cause: e });
  }
  const key = manifestKey(volumeKey, luksUuid);
  try {
    const want = Buffer.from(macOf(key, m), 'hex');
    const got = Buffer.from(typeof m.mac === 'string' ? m.mac : '', 'hex');
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new EngineError('ENGINE_VERIFY_FAILED', `${manifestPath(file)}: its MAC does not verify`);
  } finally {
    key.fill(0);
  }
  return typeof m.sourceUuid === 'string' ? m.sourceUuid : null;
}
