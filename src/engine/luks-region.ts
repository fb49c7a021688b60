/**
 * The LUKS header region of an image's virtual disk, held in memory so the
 * LUKS library works on it whatever the container (a dynamic VHD's virtual
 * disk is not its file). Edits are written back with writeLuksRegion.
 */
import { LUKS_MAGIC, LUKS_MAX_HEADER_REGION as MAX_HEADER_REGION, readVolumeInfo, type LuksVolumeInfo } from '../luks/index.js';
import type { DiskImage, WritableImage } from '../image/index.js';
import { VhdcryptError } from '../errors.js';
import { EngineError } from './errors.js';

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

/**
 * The LUKS header facts of an image's virtual disk, read straight from the image (only the binary headers
 * and JSON area), or null when the disk holds no LUKS header (plain or not encrypted).
 */
export async function readLuksInfo(image: DiskImage): Promise<LuksVolumeInfo | null> {
  let info: LuksVolumeInfo;
  try {
    info = await readVolumeInfo(image);
  } catch (e) {
    if (e instanceof VhdcryptError && e.code === 'LUKS_BAD_MAGIC') return null;
    throw e;
  }
  if (info.dataOffset > MAX_HEADER_REGION) {
    throw new EngineError('ENGINE_HEADER_TOO_LARGE', `${image.path}: LUKS data offset ${info.dataOffset} is past the ${MAX_HEADER_REGION}-byte ceiling`);
  }
  if (info.dataOffset > image.virtualSize) {
    throw new EngineError('ENGINE_NOT_ENCRYPTED', `${image.path}: LUKS data offset ${info.dataOffset} is past the end of the ${image.virtualSize}-byte disk`);
  }
  return info;
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

/** Write an edited header region back (then flush) into a writable image. */
export async function writeLuksRegion(image: WritableImage, bytes: Uint8Array): Promise<void> {
  await image.write(0n, bytes);
  await image.flush();
}
