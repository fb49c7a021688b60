/**
 * A differencing VHD writer of the tests' own, written from the VHD specification's tables ("Hard Disk Footer
 * Format", "Dynamic Disk Header Format", "Block Allocation Table and Data Blocks", "Implementing a Differencing
 * Hard Disk") and sharing nothing with src/image, so our reader and our delta encryption are checked against
 * images that our writer did not make. It writes a whole file at once from a model of the child's disk and the
 * set of 512-byte sectors the child holds.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

const SECTOR = 512;
const VHD_EPOCH = Date.UTC(2000, 0, 1) / 1000;

function checksum(b: Buffer, from: number, to: number, skipAt: number): number {
  let s = 0;
  for (let i = from; i < to; i++) if (i < skipAt || i >= skipAt + 4) s += b[i]!;
  return ~s >>> 0;
}

/** The VHD unique id of a file (a fixed disk's footer is at the end; dynamic and differencing keep a copy there too). */
export function vhdUuidOf(file: string): Buffer {
  const b = readFileSync(file);
  const f = b.subarray(b.length - SECTOR);
  if (f.toString('latin1', 0, 8) !== 'conectix') throw new Error(`${file}: no VHD footer at the end`);
  return Buffer.from(f.subarray(68, 84));
}

/** Spec appendix "CHS calculation". */
function chs(size: number): [number, number, number] {
  let total = Math.min(size / SECTOR, 65535 * 16 * 255);
  let spt: number, heads: number, cth: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = total / spt;
  } else {
    spt = 17;
    cth = total / spt;
    heads = Math.max(4, Math.floor((cth + 1023) / 1024));
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = total / spt;
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = total / spt;
    }
  }
  total = Math.floor(cth / heads);
  return [total, heads, spt];
}

export interface DiffSpec {
  /** The parent VHD (its unique id and mtime go into the header; W2ru/W2ku locators name it). */
  readonly parent: string;
  readonly size: number;
  readonly blockSize: number;
  /** The child's whole disk as it should read (parent content where the child holds nothing). */
  readonly model: Uint8Array;
  /** 512-byte sector numbers the child holds. */
  readonly held: ReadonlySet<number>;
}

/** Write a differencing VHD holding `held` sectors of `model` over `parent`. */
export function writeDifferencingVhd(file: string, spec: DiffSpec): void {
  const { size, blockSize: bs } = spec;
  const blocks = Math.ceil(size / bs);
  const batBytes = Math.ceil((blocks * 4) / SECTOR) * SECTOR;
  const bitmapBytes = Math.ceil(bs / SECTOR / 8 / SECTOR) * SECTOR;
  const rel = '.\\' + path.relative(path.dirname(path.resolve(file)), path.resolve(spec.parent)).split(path.sep).join('\\');
  const locs = [
    { code: 'W2ru', data: Buffer.from(rel, 'utf16le') },
    { code: 'W2ku', data: Buffer.from(path.resolve(spec.parent), 'utf16le') },
  ];
  let pos = 1536 + batBytes;
  const locAt: number[] = [];
  for (const l of locs) {
    locAt.push(pos);
    pos += Math.ceil(l.data.length / SECTOR) * SECTOR;
  }
  const perBlock = bs / SECTOR;
  const used = new Map<number, number[]>();
  for (const s of [...spec.held].sort((a, b) => a - b)) {
    const blk = Math.floor(s / perBlock);
    if (!used.has(blk)) used.set(blk, []);
    used.get(blk)!.push(s - blk * perBlock);
  }
  const blockAt = new Map<number, number>();
  for (const blk of used.keys()) {
    blockAt.set(blk, pos);
    pos += bitmapBytes + bs;
  }
  const out = Buffer.alloc(pos + SECTOR);
  // Footer.
  const footer = Buffer.alloc(SECTOR);
  footer.write('conectix', 0, 'latin1');
  footer.writeUInt32BE(2, 8);
  footer.writeUInt32BE(0x00010000, 12);
  footer.writeBigUInt64BE(512n, 16);
  footer.writeUInt32BE(Math.floor(Date.now() / 1000 - VHD_EPOCH), 24);
  footer.write('tst ', 28, 'latin1');
  footer.writeUInt32BE(0x00010000, 32);
  footer.write('Wi2k', 36, 'latin1');
  footer.writeBigUInt64BE(BigInt(size), 40);
  footer.writeBigUInt64BE(BigInt(size), 48);
  const [c, h, s] = chs(size);
  footer.writeUInt16BE(c, 56);
  footer.writeUInt8(h, 58);
  footer.writeUInt8(s, 59);
  footer.writeUInt32BE(4, 60);
  randomBytes(16).copy(footer, 68);
  footer.writeUInt32BE(checksum(footer, 0, SECTOR, 64), 64);
  footer.copy(out, 0);
  footer.copy(out, out.length - SECTOR);
  // Dynamic header.
  const hd = Buffer.alloc(1024);
  hd.write('cxsparse', 0, 'latin1');
  hd.writeBigUInt64BE(0xffffffffffffffffn, 8);
  hd.writeBigUInt64BE(1536n, 16);
  hd.writeUInt32BE(0x00010000, 24);
  hd.writeUInt32BE(blocks, 28);
  hd.writeUInt32BE(bs, 32);
  vhdUuidOf(spec.parent).copy(hd, 40);
  hd.writeUInt32BE(Math.floor(statSync(spec.parent).mtimeMs / 1000 - VHD_EPOCH), 56);
  const name = Buffer.from(path.basename(spec.parent), 'utf16le').swap16();
  name.copy(hd, 64, 0, Math.min(name.length, 512));
  locs.forEach((l, i) => {
    const at = 576 + 24 * i;
    hd.write(l.code, at, 'latin1');
    hd.writeUInt32BE(Math.ceil(l.data.length / SECTOR), at + 4);
    hd.writeUInt32BE(l.data.length, at + 8);
    hd.writeBigUInt64BE(BigInt(locAt[i]!), at + 16);
    l.data.copy(out, locAt[i]!);
  });
  hd.writeUInt32BE(checksum(hd, 0, 1024, 36), 36);
  hd.copy(out, 512);
  // BAT and blocks.
  out.fill(0xff, 1536, 1536 + batBytes);
  for (const [blk, sectors] of used) {
    const at = blockAt.get(blk)!;
    out.writeUInt32BE(at / SECTOR, 1536 + blk * 4);
    for (const i of sectors) {
      out[at + (i >> 3)]! |= 0x80 >> (i & 7);
      const v = blk * bs + i * SECTOR;
      out.set(spec.model.subarray(v, v + SECTOR), at + bitmapBytes + i * SECTOR);
    }
  }
  writeFileSync(file, out);
}

/** A child's plaintext being written: the model of its disk and the 512-byte sectors it holds. */
export class DiffModel {
  readonly model: Uint8Array;
  readonly held = new Set<number>();
  constructor(parentModel: Uint8Array) {
    this.model = Uint8Array.from(parentModel);
  }
  /** Write bytes at any offset: the sectors they touch are held (their other bytes keep the parent's). */
  write(offset: number, data: Uint8Array): void {
    this.model.set(data, offset);
    for (let s = Math.floor(offset / SECTOR); s < Math.ceil((offset + data.length) / SECTOR); s++) this.held.add(s);
  }
}
