/**
 * The front of an incoming image stream: raw bytes, a fixed VHD (data, then
 * the footer), or a dynamic VHD as backup tools emit it (spec "Dynamic Hard
 * Disk Image": footer copy, dynamic header, BAT, blocks in file order,
 * footer). Parsed with the layout readers the file reader uses; the BAT tells
 * which blocks exist, and they are visited in file order. Errors are the
 * caller's (its input's `faults`), so a stream's failures keep the codes of
 * the part that offers the stream.
 */
import { VhdcryptError } from '../errors.js';
import { BAT_UNALLOCATED, DYNAMIC_HEADER_SIZE, readBat, readDynamicHeader, sectorBitmapSize, type DynamicHeader } from './vhd-dynamic-header.js';
import { VHD_FOOTER_COOKIE, VHD_FOOTER_SIZE, VhdDiskType, readVhdFooter, type VhdFooter } from './vhd-footer.js';
import { BAT_ENTRY_SIZE, VHD_SECTOR_SIZE, sectorOffset } from './vhd-layout.js';
import { MAX_BAT_ENTRIES } from './vhd-open.js';

/** The typed errors a stream's owner raises for what the reader finds wrong. */
export interface VhdStreamFaults {
  /** The stream is not the well-formed disk it claims to be (bad structure, cut short). */
  badInput(message: string, cause?: unknown): Error;
  /** A structure lies before bytes a one-pass reader has already passed. */
  outOfOrder(message: string): Error;
  /** The caller's own arguments (format, size) are impossible or contradict the stream. */
  badArgument(message: string): Error;
  /** A disk the stream cannot carry alone (a differencing disk needs its parent). */
  unsupported(message: string): Error;
}

/** The one-pass input the reader pulls from. */
export interface VhdStreamInput {
  /** Bytes consumed so far (the file offset of the next byte). */
  readonly position: bigint;
  readExactly(n: number, what: string): Promise<Uint8Array>;
  skip(n: bigint, what: string): Promise<void>;
  /** Put bytes just read back in front. */
  unread(bytes: Uint8Array): void;
  /** Everything up to the end, keeping (and returning) only the last `keep` bytes. */
  tail(keep: number, what: string): Promise<{ bytes: Uint8Array }>;
  readonly faults: VhdStreamFaults;
}

export type StreamInputFormat = 'vhd' | 'raw';

export interface FlatSource {
  readonly kind: 'raw' | 'vhd-fixed';
  /** Virtual size when the caller gave it; a fixed VHD's footer tells it only at the end. */
  readonly size: bigint | null;
}

/** An allocated block: its index in the virtual disk and where it sits in the file. */
export interface BlockPlace {
  readonly index: number;
  readonly fileOffset: bigint;
}

export interface DynamicSource {
  readonly kind: 'vhd-dynamic';
  readonly size: bigint;
  readonly footer: VhdFooter;
  readonly header: DynamicHeader;
  readonly blockSize: number;
  readonly bitmapSize: number;
  /** Blocks of the virtual disk (ceil(size / blockSize)). */
  readonly entries: number;
  /** The input BAT (sector offsets, BAT_UNALLOCATED for none): 4 bytes per block. */
  readonly bat: Uint32Array;
  /** Indices of the allocated blocks in file order (compact: a large disk's BAT is the only per-block state). */
  readonly order: Uint32Array;
}

/** The k-th allocated block in file order. */
export function blockInFileOrder(src: DynamicSource, k: number): BlockPlace {
  const index = src.order[k]!;
  return { index, fileOffset: sectorOffset(src.bat[index]!) };
}

export type StreamSource = FlatSource | DynamicSource;

/** Wrap a layout reader's error into a stream error naming the structure. */
function badInput(input: VhdStreamInput, what: string, e: unknown): Error {
  const why = e instanceof Error ? e.message : String(e);
  const code = e instanceof VhdcryptError ? ` [${e.code}]` : '';
  return input.faults.badInput(`input stream: ${what}: ${why}${code}`, e);
}

/** Read the stream's leading structures and say what follows. */
export async function readStreamSource(input: VhdStreamInput, format: StreamInputFormat, sizeHint: bigint | undefined): Promise<StreamSource> {
  if (sizeHint !== undefined && (typeof sizeHint !== 'bigint' || sizeHint <= 0n || sizeHint % BigInt(VHD_SECTOR_SIZE) !== 0n)) {
    throw input.faults.badArgument(`sourceSize expected a positive bigint, a whole number of 512-byte sectors, got ${String(sizeHint)}`);
  }
  if (format === 'raw') return { kind: 'raw', size: sizeHint ?? null };
  if (format !== 'vhd') throw input.faults.badArgument(`inputFormat expected vhd or raw, got ${String(format)}`);
  const first = await input.readExactly(VHD_FOOTER_SIZE, 'the first sector of the VHD');
  const cookie = new TextDecoder('latin1').decode(first.subarray(0, 8));
  // A dynamic disk starts with a footer copy; a fixed one starts with its data.
  if (cookie !== VHD_FOOTER_COOKIE) return fixedSource(input, first, sizeHint);
  let footer: VhdFooter;
  try {
    footer = readVhdFooter(first);
  } catch (e) {
    throw badInput(input, 'footer copy at offset 0', e);
  }
  if (footer.diskType === VhdDiskType.fixed) return fixedSource(input, first, sizeHint);
  if (footer.diskType === VhdDiskType.differencing) {
    throw input.faults.unsupported('input stream: a differencing VHD needs its parent; flatten it first (or use encryptImage on the chain)');
  }
  return readDynamicLayout(input, footer, sizeHint);
}

/** A fixed disk: the sector read to tell it from a dynamic one is data; it goes back in front. */
function fixedSource(input: VhdStreamInput, first: Uint8Array, sizeHint: bigint | undefined): FlatSource {
  input.unread(first);
  return { kind: 'vhd-fixed', size: sizeHint ?? null };
}

async function skipTo(input: VhdStreamInput, offset: bigint, what: string): Promise<void> {
  if (offset < input.position) {
    throw input.faults.outOfOrder(`input stream: ${what} at offset ${offset} comes before offset ${input.position} already read; a one-pass stream needs it later`);
  }
  await input.skip(offset - input.position, what);
}

async function readDynamicLayout(input: VhdStreamInput, footer: VhdFooter, sizeHint: bigint | undefined): Promise<DynamicSource> {
  const size = footer.currentSize;
  if (size <= 0n) throw input.faults.badInput('input stream: the VHD footer gives a virtual size of 0');
  if (sizeHint !== undefined && sizeHint !== size) {
    throw input.faults.badArgument(`sourceSize ${sizeHint} differs from the VHD footer's virtual size ${size}`);
  }
  await skipTo(input, footer.dataOffset, 'the dynamic disk header');
  const headerBytes = await input.readExactly(DYNAMIC_HEADER_SIZE, 'the dynamic disk header');
  let header: DynamicHeader;
  try {
    header = readDynamicHeader(headerBytes);
  } catch (e) {
    throw badInput(input, 'dynamic disk header', e);
  }
  const bs = header.blockSize;
  const blocks = (size + BigInt(bs) - 1n) / BigInt(bs);
  if (blocks > BigInt(MAX_BAT_ENTRIES)) {
    throw input.faults.badInput(`input stream: a ${size}-byte disk of ${bs}-byte blocks has ${blocks} blocks, over the ${MAX_BAT_ENTRIES} held in memory`);
  }
  const entries = Number(blocks);
  if (header.maxTableEntries < entries) {
    throw input.faults.badInput(`input stream: BAT has ${header.maxTableEntries} entries but a ${size}-byte disk of ${bs}-byte blocks needs ${entries}`);
  }
  await skipTo(input, header.tableOffset, 'the BAT');
  const bat = readBat(await input.readExactly(entries * BAT_ENTRY_SIZE, 'the BAT'), entries);
  const batEnd = header.tableOffset + BigInt(header.maxTableEntries) * BigInt(BAT_ENTRY_SIZE);
  const bitmapSize = sectorBitmapSize(bs);
  const span = BigInt(bitmapSize + bs);
  let allocated = 0;
  for (let i = 0; i < entries; i++) if (bat[i] !== BAT_UNALLOCATED) allocated++;
  const order = new Uint32Array(allocated);
  for (let i = 0, k = 0; i < entries; i++) if (bat[i] !== BAT_UNALLOCATED) order[k++] = i;
  // Sector offsets are below 2^32, so the difference is exact.
  order.sort((a, b) => bat[a]! - bat[b]!);
  let end = batEnd;
  for (const i of order) {
    const at = sectorOffset(bat[i]!);
    if (at < end) {
      const what = at < batEnd ? 'lies inside the disk header or BAT' : 'overlaps the block before it';
      throw input.faults.badInput(`input stream: block ${i} at file offset ${at} ${what}`);
    }
    end = at + span;
  }
  return Object.freeze({ kind: 'vhd-dynamic', size, footer, header, blockSize: bs, bitmapSize, entries, bat, order });
}

/** Move to a block's data: past the gap before it and its sector bitmap (dynamic disks read the data, as qemu does). */
export async function enterBlock(input: VhdStreamInput, src: DynamicSource, p: BlockPlace): Promise<void> {
  await skipTo(input, p.fileOffset, `block ${p.index}`);
  await input.skip(BigInt(src.bitmapSize), `the sector bitmap of block ${p.index}`);
}

/**
 * The stream's end footer (after any gap), checked against what the stream
 * started with; size 'before' means the disk is every byte before the footer (fixed).
 */
export async function readEndFooter(input: VhdStreamInput, expect: { diskType: number; size: bigint | 'before' }): Promise<VhdFooter> {
  const { bytes } = await input.tail(VHD_FOOTER_SIZE, 'the VHD footer at the end');
  const size = expect.size === 'before' ? input.position - BigInt(VHD_FOOTER_SIZE) : expect.size;
  let f: VhdFooter;
  try {
    f = readVhdFooter(bytes);
  } catch (e) {
    throw badInput(input, `the last ${VHD_FOOTER_SIZE} bytes are not a valid VHD footer (truncated stream?)`, e);
  }
  if (f.diskType !== expect.diskType) {
    throw input.faults.badInput(`input stream: the end footer says disk type ${f.diskType}, the stream is of type ${expect.diskType}`);
  }
  if (f.currentSize !== size) {
    throw input.faults.badInput(`input stream: the end footer gives a virtual size of ${f.currentSize}, the stream carries ${size} bytes (truncated stream?)`);
  }
  return f;
}
