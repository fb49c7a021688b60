/**
 * BitLocker (BDE, "BITLK") on-disk metadata of Windows 7 and later: the volume header (sector 0), the three FVE
 * metadata blocks it points at, and the entries (datums) inside them. Sources: libyal/libbde "BitLocker Drive
 * Encryption (BDE) format" (rev 0.0.16) and the structure layouts of cryptsetup's lib/bitlk (format facts only).
 *
 * Every size read from the disk is bounded before it sizes a read or an allocation: a block is at most 64 KiB, an
 * entry at most its block, and entries nest at most one level (VMK properties).
 */
import { BitlockerError } from './errors.js';

/** Reads bytes of the (encrypted) volume, relative to its first byte. */
export interface VolumeBytes {
  /** Bytes in the volume (the partition, or the whole image for a bare volume). */
  readonly size: bigint;
  read(offset: bigint, into: Uint8Array): Promise<void>;
}

/** One FVE metadata block and its copies: 64 KiB each (libbde "FVE metadata block"). */
export const FVE_BLOCK_SIZE = 64 * 1024;
const BLOCK_HEADER_LEN = 64;
const METADATA_HEADER_LEN = 48;
const ENTRY_HEADER_LEN = 8;
const VMK_HEADER_LEN = 28;
const NONCE_LEN = 12;
const TAG_LEN = 16;
/** Encryption state "encrypted" (libbde "FVE metadata block header", cryptsetup BITLK_STATE_NORMAL). */
const STATE_NORMAL = 4;

const SIGNATURE = Buffer.from('-FVE-FS-', 'latin1');
const SIGNATURE_TOGO = Buffer.from('MSWIN4.1', 'latin1');
const BOOT_V2 = Buffer.from([0xeb, 0x58, 0x90]);
const BOOT_VISTA = Buffer.from([0xeb, 0x52, 0x90]);
/** Where the volume type GUID and the three block offsets sit in sector 0 (normal volume / BitLocker To Go). */
const SUPERBLOCK_AT = 160;
const SUPERBLOCK_AT_TOGO = 424;

/** Volume type GUIDs (sector 0): a fully encrypted volume, and "used space only" / encrypt-on-write. */
export const GUID_NORMAL = '4967d63b-2e29-4ad8-8399-f6a339e3d001';
export const GUID_EOW = '92a84d3b-dd80-4d0e-9e4e-b1e3284eaed8';

/** Entry types and value types (libbde "FVE metadata entry"). */
export const EntryType = { property: 0x0000, vmk: 0x0002, fvek: 0x0003, startupKey: 0x0006, description: 0x0007, volumeHeader: 0x000f } as const;
export const ValueType = {
  erased: 0x0000,
  key: 0x0001,
  string: 0x0002,
  stretchKey: 0x0003,
  useKey: 0x0004,
  aesCcm: 0x0005,
  tpmKey: 0x0006,
  validation: 0x0007,
  vmk: 0x0008,
  externalKey: 0x0009,
  offsetSize: 0x000f,
  recoveryTime: 0x0015,
  guid: 0x0017,
  hint: 0x0018,
} as const;

/** VMK protection types (libbde "Volume master key"). */
export const PROTECTIONS: Readonly<Record<number, string>> = {
  0x0000: 'clear key',
  0x0100: 'TPM',
  0x0200: 'startup key',
  0x0500: 'TPM and PIN',
  0x0800: 'recovery password',
  0x1000: 'smart card',
  0x2000: 'password',
};
export const Protection = { clearKey: 0x0000, startupKey: 0x0200, recoveryPassword: 0x0800, password: 0x2000 } as const;

/** Encryption methods of the FVEK (libbde "Encryption methods"). */
export interface CipherSpec {
  readonly method: number;
  readonly mode: 'xts' | 'cbc' | 'cbc-elephant';
  /** AES key bits of the data key. */
  readonly bits: 128 | 256;
  /** What cryptsetup's bitlkDump calls it. */
  readonly name: string;
}
export const CIPHERS: Readonly<Record<number, CipherSpec>> = {
  0x8000: { method: 0x8000, mode: 'cbc-elephant', bits: 128, name: 'aes-cbc-elephant' },
  0x8001: { method: 0x8001, mode: 'cbc-elephant', bits: 256, name: 'aes-cbc-elephant' },
  0x8002: { method: 0x8002, mode: 'cbc', bits: 128, name: 'aes-cbc-eboiv' },
  0x8003: { method: 0x8003, mode: 'cbc', bits: 256, name: 'aes-cbc-eboiv' },
  0x8004: { method: 0x8004, mode: 'xts', bits: 128, name: 'aes-xts-plain64' },
  0x8005: { method: 0x8005, mode: 'xts', bits: 256, name: 'aes-xts-plain64' },
};

/** An AES-CCM encrypted key datum: 12-byte nonce, 16-byte MAC, ciphertext (libbde "AES-CCM encrypted key"). */
export interface CcmBlob {
  readonly nonce: Buffer;
  readonly tag: Buffer;
  readonly data: Buffer;
}

export interface VmkEntry {
  readonly guid: string;
  readonly protection: number;
  readonly protectionName: string;
  readonly modified: Date | null;
  readonly name: string | null;
  /** Password and recovery password: the salt of the stretch key. */
  readonly salt: Buffer | null;
  /** The VMK itself, encrypted under the protector's key. */
  readonly encryptedKey: CcmBlob | null;
  /** Clear key protector: the key that opens `encryptedKey`, stored in the clear. */
  readonly clearKey: Buffer | null;
}

export interface FveMetadata {
  readonly variant: 'normal' | 'togo';
  readonly typeGuid: string;
  readonly sectorSize: number;
  readonly metadataOffsets: readonly [bigint, bigint, bigint];
  /** Which copy was used (0..2), and why each other one that failed did. */
  readonly usedCopy: number;
  readonly damagedCopies: readonly { readonly copy: number; readonly reason: string }[];
  readonly currentState: number;
  readonly nextState: number;
  /** The encrypted volume size the block header records. */
  readonly volumeSize: bigint;
  readonly volumeHeaderOffset: bigint;
  readonly volumeHeaderSize: bigint;
  readonly guid: string;
  readonly cipher: CipherSpec;
  readonly creationTime: Date | null;
  readonly description: string;
  readonly vmks: readonly VmkEntry[];
  readonly fvek: CcmBlob;
}

/** A GUID as Windows writes it: the first three fields little-endian. */
export function guidString(b: Uint8Array): string {
  const h = Buffer.from(b.subarray(0, 16)).toString('hex');
  const le = (s: string): string => s.match(/../g)!.reverse().join('');
  return `${le(h.slice(0, 8))}-${le(h.slice(8, 12))}-${le(h.slice(12, 16))}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** Windows FILETIME (100 ns since 1601) as a Date; null for zero or a time past any Date. */
export function filetimeDate(v: bigint): Date | null {
  if (v === 0n) return null;
  const ms = Number(v / 10000n) - 11644473600000;
  return Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? new Date(ms) : null;
}

function utf16(b: Buffer): string {
  return b.subarray(0, b.length & ~1).toString('utf16le').replace(/\0+$/, '');
}

/** What sector 0 says: the kind of volume and where its three FVE blocks are, or why it is not one we read. */
export interface VolumeHeader {
  readonly variant: 'normal' | 'togo';
  readonly typeGuid: string;
  readonly sectorSize: number;
  readonly metadataOffsets: readonly [bigint, bigint, bigint];
}

/** True when sector 0 carries a BitLocker signature (Vista's too), so a partition scan can tell it from a plain one. */
export function looksLikeBitlocker(sector0: Uint8Array): boolean {
  const b = Buffer.from(sector0.buffer, sector0.byteOffset, sector0.length);
  if (b.length < 512) return false;
  if (b.subarray(3, 11).equals(SIGNATURE)) return true;
  if (b.subarray(3, 11).equals(SIGNATURE_TOGO)) {
    const g = guidString(b.subarray(SUPERBLOCK_AT_TOGO, SUPERBLOCK_AT_TOGO + 16));
    return g === GUID_NORMAL || g === GUID_EOW;
  }
  return false;
}

/** Parse sector 0 (at least 512 bytes). */
export function parseVolumeHeader(sector0: Uint8Array): VolumeHeader {
  const b = Buffer.from(sector0.buffer, sector0.byteOffset, sector0.length);
  if (b.length < 512 || !looksLikeBitlocker(b)) throw new BitlockerError('BITLK_BAD_HEADER', 'no BitLocker signature (-FVE-FS- or a To Go volume) in the volume header');
  const togo = b.subarray(3, 11).equals(SIGNATURE_TOGO);
  if (!togo && b.subarray(0, 3).equals(BOOT_VISTA)) {
    throw new BitlockerError('BITLK_UNSUPPORTED_VISTA', 'Windows Vista BitLocker metadata (version 1, boot code EB 52 90) is not supported');
  }
  if (!togo && !b.subarray(0, 3).equals(BOOT_V2)) {
    throw new BitlockerError('BITLK_BAD_HEADER', `unknown boot code ${b.subarray(0, 3).toString('hex')} before the BitLocker signature`);
  }
  const sectorSize = b.readUInt16LE(11);
  if (sectorSize !== 512 && sectorSize !== 4096) {
    throw new BitlockerError('BITLK_UNSUPPORTED_SECTOR_SIZE', `BitLocker volume with ${sectorSize}-byte sectors (512 and 4096 are supported)`);
  }
  const at = togo ? SUPERBLOCK_AT_TOGO : SUPERBLOCK_AT;
  const typeGuid = guidString(b.subarray(at, at + 16));
  const offsets = [0, 1, 2].map((i) => b.readBigUInt64LE(at + 16 + 8 * i)) as [bigint, bigint, bigint];
  return { variant: togo ? 'togo' : 'normal', typeGuid, sectorSize, metadataOffsets: offsets };
}

interface RawEntry {
  readonly size: number;
  readonly type: number;
  readonly value: number;
  readonly data: Buffer;
}

/** The entries of `b` (a run of datums), each checked to fit; a zero size ends the run. */
export function* entries(b: Buffer, what: string): Generator<RawEntry> {
  let at = 0;
  while (b.length - at >= ENTRY_HEADER_LEN) {
    const size = b.readUInt16LE(at);
    if (size === 0) return;
    if (size < ENTRY_HEADER_LEN || size > b.length - at) {
      throw new BitlockerError('BITLK_BAD_METADATA', `${what}: entry at ${at} has size ${size}, outside 8..${b.length - at}`);
    }
    yield { size, type: b.readUInt16LE(at + 2), value: b.readUInt16LE(at + 4), data: b.subarray(at + ENTRY_HEADER_LEN, at + size) };
    at += size;
  }
}

function ccmBlob(data: Buffer, what: string): CcmBlob {
  if (data.length < NONCE_LEN + TAG_LEN + 1) throw new BitlockerError('BITLK_BAD_METADATA', `${what}: AES-CCM datum of ${data.length} bytes is too short`);
  return { nonce: data.subarray(0, NONCE_LEN), tag: data.subarray(NONCE_LEN, NONCE_LEN + TAG_LEN), data: data.subarray(NONCE_LEN + TAG_LEN) };
}

function parseVmk(data: Buffer): VmkEntry {
  if (data.length < VMK_HEADER_LEN) throw new BitlockerError('BITLK_BAD_METADATA', `VMK entry of ${data.length} bytes is shorter than its ${VMK_HEADER_LEN}-byte header`);
  const guid = guidString(data.subarray(0, 16));
  const protection = data.readUInt16LE(26);
  let salt: Buffer | null = null;
  let encryptedKey: CcmBlob | null = null;
  let clearKey: Buffer | null = null;
  let name: string | null = null;
  for (const p of entries(data.subarray(VMK_HEADER_LEN), `VMK ${guid}`)) {
    switch (p.value) {
      case ValueType.stretchKey:
        if (p.data.length < 4 + 16) throw new BitlockerError('BITLK_BAD_METADATA', `VMK ${guid}: stretch key datum too short`);
        salt = p.data.subarray(4, 20);
        break;
      case ValueType.aesCcm:
        encryptedKey = ccmBlob(p.data, `VMK ${guid}`);
        break;
      case ValueType.key:
        if (p.data.length < 4 + 16) throw new BitlockerError('BITLK_BAD_METADATA', `VMK ${guid}: key datum too short`);
        clearKey = p.data.subarray(4);
        break;
      case ValueType.string:
        name ??= utf16(p.data);
        break;
      default:
        // TPM blobs, hints, recovery times and "use key" datums carry nothing a protector we support needs.
        break;
    }
  }
  return {
    guid,
    protection,
    protectionName: PROTECTIONS[protection] ?? `unknown (0x${protection.toString(16).padStart(4, '0')})`,
    modified: filetimeDate(data.readBigUInt64LE(16)),
    name,
    salt,
    encryptedKey,
    clearKey,
  };
}

/** Why one FVE block copy cannot be used, or null when it can. */
function checkCopy(block: Buffer, at: bigint, copy: number, header: VolumeHeader): string | null {
  if (!block.subarray(0, 8).equals(SIGNATURE)) return 'no -FVE-FS- signature';
  const version = block.readUInt16LE(10);
  if (version === 1) throw new BitlockerError('BITLK_UNSUPPORTED_VISTA', `FVE metadata copy ${copy + 1} is version 1 (Windows Vista), which is not supported`);
  if (version !== 2) return `unknown metadata version ${version}`;
  const size = block.readUInt16LE(8) << 4;
  if (size < BLOCK_HEADER_LEN + METADATA_HEADER_LEN || size + 8 > FVE_BLOCK_SIZE) return `block size ${size} out of range`;
  // The validation header right after the block: u16 size, u16 version, u32 CRC-32 of the block.
  const vSize = block.readUInt16LE(size);
  const vVersion = block.readUInt16LE(size + 2);
  if (vSize < 8 || vVersion > 2) return 'no validation header after the block';
  // node:zlib on first use: this module is loaded by every CLI start, BitLocker metadata read by few.
  const crc = process.getBuiltinModule('node:zlib').crc32(block.subarray(0, size));
  if (crc !== block.readUInt32LE(size + 4)) return 'CRC-32 mismatch';
  if (block.readBigUInt64LE(32 + 8 * copy) !== at) return `the block records copy ${copy + 1} at ${block.readBigUInt64LE(32 + 8 * copy)}, not ${at}`;
  void header;
  return null;
}

/** Read and check sector 0 and the FVE blocks; the first copy that checks is used, the others reported. */
export async function readFveMetadata(volume: VolumeBytes): Promise<FveMetadata> {
  if (volume.size < 512n) throw new BitlockerError('BITLK_BAD_HEADER', `a volume of ${volume.size} bytes is too small to be BitLocker`);
  const sector0 = Buffer.alloc(512);
  await volume.read(0n, sector0);
  const header = parseVolumeHeader(sector0);
  const damaged: { copy: number; reason: string }[] = [];
  let block: Buffer | null = null;
  let used = -1;
  for (let copy = 0; copy < 3 && block === null; copy++) {
    const at = header.metadataOffsets[copy]!;
    if (at % 512n !== 0n || at + BigInt(FVE_BLOCK_SIZE) > volume.size || at < 512n) {
      damaged.push({ copy, reason: `offset ${at} is outside the volume or not sector-aligned` });
      continue;
    }
    const b = Buffer.alloc(FVE_BLOCK_SIZE);
    await volume.read(at, b);
    const why = checkCopy(b, at, copy, header);
    if (why === null) {
      block = b;
      used = copy;
    } else damaged.push({ copy, reason: why });
  }
  if (block === null) {
    throw new BitlockerError('BITLK_BAD_METADATA', `no usable FVE metadata copy: ${damaged.map((d) => `copy ${d.copy + 1}: ${d.reason}`).join('; ')}`);
  }
  return parseBlock(block, used, damaged, header, volume.size);
}

function parseBlock(block: Buffer, used: number, damaged: { copy: number; reason: string }[], header: VolumeHeader, deviceSize: bigint): FveMetadata {
  const size = block.readUInt16LE(8) << 4;
  const currentState = block.readUInt16LE(12);
  const nextState = block.readUInt16LE(14);
  const volumeSize = block.readBigUInt64LE(16);
  const headerSectors = block.readUInt32LE(28);
  const offsets = [0, 1, 2].map((i) => block.readBigUInt64LE(32 + 8 * i)) as [bigint, bigint, bigint];
  let volumeHeaderOffset = block.readBigUInt64LE(56);
  let volumeHeaderSize = BigInt(headerSectors) * BigInt(header.sectorSize);
  const m = block.subarray(BLOCK_HEADER_LEN);
  const metadataSize = m.readUInt32LE(0);
  if (metadataSize < METADATA_HEADER_LEN || BLOCK_HEADER_LEN + metadataSize > size) {
    throw new BitlockerError('BITLK_BAD_METADATA', `metadata size ${metadataSize} does not fit the ${size}-byte block`);
  }
  const guid = guidString(m.subarray(16, 32));
  const method = m.readUInt16LE(36);
  const creationTime = filetimeDate(m.readBigUInt64LE(40));
  const vmks: VmkEntry[] = [];
  let fvek: CcmBlob | null = null;
  let description = '';
  for (const e of entries(m.subarray(METADATA_HEADER_LEN, metadataSize), 'FVE metadata')) {
    if (e.type === EntryType.vmk && e.value === ValueType.vmk) vmks.push(parseVmk(e.data));
    else if (e.type === EntryType.fvek && e.value === ValueType.aesCcm && fvek === null) fvek = ccmBlob(e.data, 'FVEK');
    else if (e.type === EntryType.volumeHeader && e.value === ValueType.offsetSize) {
      if (e.data.length < 16) throw new BitlockerError('BITLK_BAD_METADATA', 'volume header entry too short');
      volumeHeaderOffset = e.data.readBigUInt64LE(0);
      volumeHeaderSize = e.data.readBigUInt64LE(8);
    } else if (e.type === EntryType.description && e.value === ValueType.string && description === '') description = utf16(e.data);
  }
  const cipher = CIPHERS[method];
  if (cipher === undefined) throw new BitlockerError('BITLK_UNSUPPORTED_CIPHER', `unknown encryption method 0x${method.toString(16).padStart(4, '0')}`);
  if (fvek === null) throw new BitlockerError('BITLK_BAD_METADATA', 'no FVEK entry in the FVE metadata');
  const ss = BigInt(header.sectorSize);
  if (volumeHeaderOffset % ss !== 0n || volumeHeaderSize % ss !== 0n || volumeHeaderOffset + volumeHeaderSize > deviceSize || volumeHeaderSize > deviceSize) {
    throw new BitlockerError('BITLK_BAD_METADATA', `relocated volume header [${volumeHeaderOffset}, +${volumeHeaderSize}) is not whole sectors inside the volume`);
  }
  for (const o of offsets) {
    if (o % ss !== 0n || o + BigInt(FVE_BLOCK_SIZE) > deviceSize) throw new BitlockerError('BITLK_BAD_METADATA', `FVE metadata offset ${o} is not a whole sector inside the volume`);
  }
  return {
    variant: header.variant,
    typeGuid: header.typeGuid,
    sectorSize: header.sectorSize,
    metadataOffsets: offsets,
    usedCopy: used,
    damagedCopies: damaged,
    currentState,
    nextState,
    volumeSize,
    volumeHeaderOffset,
    volumeHeaderSize,
    guid,
    cipher,
    creationTime,
    description,
    vmks,
    fvek,
  };
}

/**
 * Refuse what cannot be read as a plain decrypted view: "used space only" volumes (encrypt-on-write) and volumes
 * not fully encrypted (a conversion in progress or paused), as cryptsetup does.
 */
export function checkReadable(meta: FveMetadata): void {
  if (meta.typeGuid === GUID_EOW) {
    throw new BitlockerError('BITLK_UNSUPPORTED_EOW', `"used space only" (encrypt-on-write) BitLocker volume ${meta.guid}: its unwritten sectors are not encrypted`);
  }
  if (meta.typeGuid !== GUID_NORMAL) throw new BitlockerError('BITLK_UNSUPPORTED_STATE', `unknown BitLocker volume type ${meta.typeGuid}`);
  if (meta.currentState !== STATE_NORMAL || meta.nextState !== STATE_NORMAL) {
    throw new BitlockerError(
      'BITLK_UNSUPPORTED_STATE',
      `BitLocker volume ${meta.guid} is partially encrypted or in transition (state ${meta.currentState}, next ${meta.nextState}; 4 is fully encrypted)`,
    );
  }
}
