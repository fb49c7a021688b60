/**
 * Where the BitLocker volumes of a disk are: a bare volume (sector 0 is BitLocker's), or the partitions of an MBR
 * (the four primary entries; extended partitions are listed, not entered) or a GPT (UEFI 2.10 section 5.3: the
 * header at LBA 1, the entry array it names). Disks address 512-byte logical sectors, as VHDs do. Every count and
 * size read is bounded before it sizes a read.
 */
import { BitlockerError } from './errors.js';
import { guidString, looksLikeBitlocker, type VolumeBytes } from './metadata.js';

const LBA = 512n;
const MAX_GPT_ENTRIES = 1024;
const MAX_GPT_ENTRY_SIZE = 4096;

export interface Partition {
  /** 1-based, as fdisk numbers them (MBR slot, GPT entry index). */
  readonly index: number;
  readonly offset: bigint;
  readonly size: bigint;
  /** MBR: the type byte in hex ("07"); GPT: the type GUID. */
  readonly type: string;
  readonly name: string;
  /** Sector 0 of the partition carries a BitLocker signature. */
  readonly bitlocker: boolean;
}

export interface DiskLayout {
  /** 'volume': the whole disk is one BitLocker volume, listed as partition 0. */
  readonly scheme: 'volume' | 'mbr' | 'gpt' | 'none';
  readonly partitions: readonly Partition[];
}

/** A window of a disk: the bytes of one partition. */
export function partitionBytes(disk: VolumeBytes, p: { offset: bigint; size: bigint }): VolumeBytes {
  return {
    size: p.size,
    read: (offset, into) => {
      if (offset < 0n || offset + BigInt(into.length) > p.size) {
        throw new BitlockerError('BITLK_BAD_METADATA', `read [${offset}, +${into.length}) outside the ${p.size}-byte partition`);
      }
      return disk.read(p.offset + offset, into);
    },
  };
}

async function isBitlockerAt(disk: VolumeBytes, offset: bigint, size: bigint): Promise<boolean> {
  if (size < 512n) return false;
  const b = Buffer.alloc(512);
  await disk.read(offset, b);
  return looksLikeBitlocker(b);
}

/** Read the partition table (or find a bare BitLocker volume) of a disk. */
export async function readDiskLayout(disk: VolumeBytes): Promise<DiskLayout> {
  if (disk.size < LBA) return { scheme: 'none', partitions: [] };
  const mbr = Buffer.alloc(512);
  await disk.read(0n, mbr);
  if (looksLikeBitlocker(mbr)) {
    return { scheme: 'volume', partitions: [{ index: 0, offset: 0n, size: disk.size, type: 'BitLocker volume', name: '', bitlocker: true }] };
  }
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return { scheme: 'none', partitions: [] };
  const slots = [0, 1, 2, 3].map((i) => mbr.subarray(446 + 16 * i, 462 + 16 * i));
  if (slots.some((s) => s[4] === 0xee)) return readGpt(disk);
  const parts: Partition[] = [];
  for (const [i, s] of slots.entries()) {
    const type = s[4]!;
    const start = BigInt(s.readUInt32LE(8)) * LBA;
    const size = BigInt(s.readUInt32LE(12)) * LBA;
    if (type === 0 || size === 0n) continue;
    if (start === 0n || start + size > disk.size) {
      throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `MBR partition ${i + 1} [${start}, +${size}) lies outside the ${disk.size}-byte disk`);
    }
    const extended = type === 0x05 || type === 0x0f || type === 0x85;
    parts.push({
      index: i + 1,
      offset: start,
      size,
      type: type.toString(16).padStart(2, '0'),
      name: extended ? 'extended (not entered)' : '',
      bitlocker: !extended && (await isBitlockerAt(disk, start, size)),
    });
  }
  checkOverlap(parts);
  return { scheme: 'mbr', partitions: parts };
}

async function readGpt(disk: VolumeBytes): Promise<DiskLayout> {
  const h = Buffer.alloc(512);
  await disk.read(LBA, h);
  if (h.subarray(0, 8).toString('latin1') !== 'EFI PART') throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', 'protective MBR but no GPT header at LBA 1');
  const entriesLba = h.readBigUInt64LE(72);
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (count > MAX_GPT_ENTRIES || entrySize < 128 || entrySize > MAX_GPT_ENTRY_SIZE || entrySize % 8 !== 0) {
    throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `GPT header: ${count} entries of ${entrySize} bytes (at most ${MAX_GPT_ENTRIES} of 128..${MAX_GPT_ENTRY_SIZE})`);
  }
  const bytes = count * entrySize;
  if (entriesLba < 2n || entriesLba * LBA + BigInt(bytes) > disk.size) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `GPT entries at LBA ${entriesLba} lie outside the disk`);
  const table = Buffer.alloc(bytes);
  await disk.read(entriesLba * LBA, table);
  const parts: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue;
    const first = e.readBigUInt64LE(32);
    const last = e.readBigUInt64LE(40);
    if (last < first || (last + 1n) * LBA > disk.size) {
      throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `GPT partition ${i + 1} LBA ${first}..${last} lies outside the ${disk.size}-byte disk`);
    }
    const offset = first * LBA;
    const size = (last - first + 1n) * LBA;
    parts.push({
      index: i + 1,
      offset,
      size,
      type: guidString(e.subarray(0, 16)),
      name: e.subarray(56, 128).toString('utf16le').replace(/\0.*$/s, ''),
      bitlocker: await isBitlockerAt(disk, offset, size),
    });
  }
  checkOverlap(parts);
  return { scheme: 'gpt', partitions: parts };
}

function checkOverlap(parts: readonly Partition[]): void {
  const s = [...parts].sort((a, b) => (a.offset < b.offset ? -1 : 1));
  for (let i = 1; i < s.length; i++) {
    if (s[i]!.offset < s[i - 1]!.offset + s[i - 1]!.size) {
      throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `partitions ${s[i - 1]!.index} and ${s[i]!.index} overlap`);
    }
  }
}
