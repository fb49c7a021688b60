/**
 * Where the BitLocker volumes of a disk are: a bare volume (sector 0 is BitLocker's), or the partitions of an MBR
 * (the four primary entries, and the logical partitions of an extended one through its chain of EBRs) or a GPT
 * (UEFI 2.10 section 5.3: the header at LBA 1, the entry array it names). Disks address 512-byte logical sectors,
 * as VHDs do. Every count and size read is bounded before it sizes a read, and the EBR chain is bounded in length
 * and checked for loops, so a hostile table costs at most MAX_EBRS sector reads.
 */
import { BitlockerError } from './errors.js';
import { guidString, looksLikeBitlocker, type VolumeBytes } from './metadata.js';

const LBA = 512n;
const MAX_GPT_ENTRIES = 1024;
const MAX_GPT_ENTRY_SIZE = 4096;
/** Linux numbers logical partitions from 5 and stops at 4 + 256 (block/partitions/msdos.c); 128 EBRs is ample. */
const MAX_EBRS = 128;
const EXTENDED_TYPES = new Set([0x05, 0x0f, 0x85]);

export interface Partition {
  /** 1-based, as fdisk numbers them (MBR slot 1-4, then logical partitions from 5 in chain order; GPT entry index). */
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
  const logical: Partition[] = [];
  const ebrs: bigint[] = [];
  for (const [i, s] of slots.entries()) {
    const type = s[4]!;
    const start = BigInt(s.readUInt32LE(8)) * LBA;
    const size = BigInt(s.readUInt32LE(12)) * LBA;
    if (type === 0 || size === 0n) continue;
    if (start === 0n || start + size > disk.size) {
      throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `MBR partition ${i + 1} [${start}, +${size}) lies outside the ${disk.size}-byte disk`);
    }
    const extended = EXTENDED_TYPES.has(type);
    parts.push({
      index: i + 1,
      offset: start,
      size,
      type: type.toString(16).padStart(2, '0'),
      name: extended ? 'extended' : '',
      bitlocker: !extended && (await isBitlockerAt(disk, start, size)),
    });
    if (extended) await readEbrChain(disk, start, size, logical, ebrs);
  }
  checkOverlap(parts);
  checkOverlap(logical);
  // A logical partition decrypted in place must not cover an EBR (its own, or a later one's).
  for (const p of logical) {
    const ebr = ebrs.find((e) => e >= p.offset && e < p.offset + p.size);
    if (ebr !== undefined) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `logical partition ${p.index} [${p.offset}, +${p.size}) covers the EBR at ${ebr}`);
  }
  return { scheme: 'mbr', partitions: [...parts, ...logical] };
}

/**
 * The logical partitions of the extended partition [extStart, +extSize): each EBR's first entry is a logical
 * partition relative to that EBR, its second the next EBR relative to the start of the extended partition; the
 * third and fourth are unused. Appends to `out` (numbered on from 5) and records each EBR's offset in `ebrs`.
 */
async function readEbrChain(disk: VolumeBytes, extStart: bigint, extSize: bigint, out: Partition[], ebrs: bigint[]): Promise<void> {
  const extEnd = extStart + extSize;
  const seen = new Set<bigint>();
  const sector = Buffer.alloc(512);
  let ebr: bigint | null = extStart;
  // The count bounds the walk on its own, whatever the loop check below finds.
  for (let count = 0; ebr !== null; count++) {
    if (seen.has(ebr)) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR chain of the extended partition at ${extStart} loops back to the EBR at ${ebr}`);
    if (count >= MAX_EBRS) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR chain of the extended partition at ${extStart} is longer than ${MAX_EBRS} EBRs`);
    seen.add(ebr);
    await disk.read(ebr, sector);
    if (sector[510] !== 0x55 || sector[511] !== 0xaa) {
      // An extended partition with no logical partition may have no EBR at all (Linux reads none); a link must lead to one.
      if (ebr === extStart) return;
      throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR at ${ebr} has no 55 AA signature`);
    }
    ebrs.push(ebr);
    const at = ebr;
    const entry = (k: number) => {
      const e = sector.subarray(446 + 16 * k, 462 + 16 * k);
      return { type: e[4]!, start: BigInt(e.readUInt32LE(8)) * LBA, size: BigInt(e.readUInt32LE(12)) * LBA };
    };
    const data = entry(0);
    if (data.type !== 0 && data.size !== 0n) {
      const offset = at + data.start;
      if (data.start === 0n || offset + data.size > extEnd || offset + data.size > disk.size) {
        throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `logical partition ${5 + out.length} [${offset}, +${data.size}) (EBR at ${at}) lies outside the extended partition [${extStart}, +${extSize}) or the ${disk.size}-byte disk`);
      }
      const extended = EXTENDED_TYPES.has(data.type);
      if (extended) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR at ${at} names an extended partition as its logical partition`);
      out.push({
        index: 5 + out.length,
        offset,
        size: data.size,
        type: data.type.toString(16).padStart(2, '0'),
        name: '',
        bitlocker: await isBitlockerAt(disk, offset, data.size),
      });
    }
    const link = entry(1);
    ebr = null;
    if (link.type !== 0 && link.size !== 0n) {
      if (!EXTENDED_TYPES.has(link.type)) throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR at ${at}: second entry has type ${link.type.toString(16).padStart(2, '0')}, not a link to the next EBR`);
      const next = extStart + link.start;
      if (next + LBA > extEnd || next + LBA > disk.size) {
        throw new BitlockerError('BITLK_BAD_PARTITION_TABLE', `the EBR at ${at} links to an EBR at ${next}, outside the extended partition [${extStart}, +${extSize}) or the ${disk.size}-byte disk`);
      }
      ebr = next;
    }
  }
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
