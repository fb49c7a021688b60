/**
 * The LUKS header region of an image's virtual disk, held in memory so the
 * LUKS library works on it whatever the container (a dynamic VHD's virtual
 * disk is not its file). Edits are written back with writeLuksRegion.
 */
import { LUKS_MAGIC, LUKS_MAX_HEADER_REGION, readVolumeInfo, usedRangesOf, type LuksVolumeInfo } from '../luks/index.js';
import type { DiskImage, WritableImage } from '../image/index.js';
import { VhdcryptError } from '../errors.js';
import { VolumeError } from './errors.js';
import { imageSource, type VolumeSource } from './volume-source.js';

export interface LuksRegion {
  readonly info: LuksVolumeInfo;
  /** Bytes [0, dataOffset) of the virtual disk. */
  readonly bytes: Uint8Array;
}

async function readPrefix(image: DiskImage, n: bigint): Promise<Uint8Array> {
  const len = n < image.virtualSize ? n : image.virtualSize;
  const buf = new Uint8Array(Number(len));
  await image.read(0n, buf);
  return buf;
}

/** The header facts in `src`, or null without a LUKS magic; 'more' when the header runs past bytes still to come. */
async function luksHeaderIn(src: VolumeSource, complete: boolean): Promise<LuksVolumeInfo | null | 'more'> {
  let info: LuksVolumeInfo;
  try {
    info = await readVolumeInfo(src.header);
  } catch (e) {
    if (e instanceof VhdcryptError && e.code === 'LUKS_BAD_MAGIC') return null;
    if (e instanceof VhdcryptError && e.code === 'LUKS_TRUNCATED' && !complete) return 'more';
    throw e;
  }
  // The data offset sizes the header region a caller holds in memory: bounded before anything reads that far.
  if (info.dataOffset > LUKS_MAX_HEADER_REGION) {
    throw new VolumeError('ENGINE_HEADER_TOO_LARGE', `${src.name}: LUKS data offset ${info.dataOffset} is past the ${LUKS_MAX_HEADER_REGION}-byte ceiling`);
  }
  if (src.size !== null && info.dataOffset > src.size) {
    throw new VolumeError('ENGINE_NOT_ENCRYPTED', `${src.name}: LUKS data offset ${info.dataOffset} is past the end of the ${src.size}-byte disk`);
  }
  return info;
}

/**
 * The LUKS header facts of a volume (from an image, only the binary headers and JSON area are read), or null when
 * the disk holds no LUKS header (plain or not encrypted).
 */
export async function readVolumeLuksInfo(src: VolumeSource): Promise<LuksVolumeInfo | null> {
  return (await luksHeaderIn(src, true)) as LuksVolumeInfo | null;
}

/** readVolumeLuksInfo of an open image. */
export async function readLuksInfo(image: DiskImage): Promise<LuksVolumeInfo | null> {
  return readVolumeLuksInfo(imageSource(image));
}

/**
 * A stream's look at the first bytes of a disk as they arrive: the header facts, null without a LUKS magic, or
 * 'more' when the header runs past them and `complete` says more bytes may come.
 */
export async function probeLuksHeader(src: VolumeSource & { readonly header: Uint8Array }, complete: boolean): Promise<LuksVolumeInfo | null | 'more'> {
  return luksHeaderIn(src, complete);
}

/**
 * True when the virtual disk starts with the LUKS magic ("LUKS\xba\xbe", LUKS1 and LUKS2 primary header alike),
 * whether or not the rest of the header is sound: only the magic is read.
 */
export async function hasLuksMagic(image: DiskImage): Promise<boolean> {
  if (image.virtualSize < BigInt(LUKS_MAGIC.length)) return false;
  const head = new Uint8Array(LUKS_MAGIC.length);
  await image.read(0n, head);
  return Buffer.from(head).equals(LUKS_MAGIC);
}

/** The LUKS header region in memory, or null when the disk holds no LUKS header (plain or not encrypted). */
export async function readLuksRegion(image: DiskImage): Promise<LuksRegion | null> {
  const info = await readLuksInfo(image);
  return info && { info, bytes: await readPrefix(image, info.dataOffset) };
}

/**
 * Write a new header region (then flush) into a new image, which reads as zeros: only the ranges the header can
 * use (its copies and keyslot areas) are written. The region's other megabytes are never touched in memory (each
 * page of them read would be faulted in for nothing) and stay holes in the file. Returns the ranges written: the
 * region now reads as `bytes` in them and zeros elsewhere.
 */
export async function writeNewLuksRegion(image: WritableImage, bytes: Uint8Array): Promise<Array<readonly [number, number]>> {
  const ranges = await usedRangesOf(bytes);
  for (const [start, end] of ranges) {
    if (end > bytes.length || start >= end) throw new VolumeError('ENGINE_HEADER_TOO_LARGE', `a keyslot area [${start}, ${end}) lies outside the ${bytes.length}-byte header region`);
    await image.write(BigInt(start), bytes.subarray(start, end));
  }
  await image.flush();
  return ranges;
}

/** Write an edited header region back (then flush) into a writable image. */
export async function writeLuksRegion(image: WritableImage, bytes: Uint8Array): Promise<void> {
  await image.write(0n, bytes);
  await image.flush();
}
