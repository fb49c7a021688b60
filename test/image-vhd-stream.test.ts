/**
 * The one-pass VHD stream writer lays a dynamic disk out where the file writer (createImage) does, from the same
 * declarations; what it writes opens with our file reader and passes qemu-img check; the stream reader reads it
 * back in one pass and reports faults as its caller's errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createImage, openImage, readDynamicHeader, readVhdFooter, VHD_FOOTER_SIZE, DYNAMIC_HEADER_SIZE } from '../src/image/index.js';
import { blockInFileOrder, enterBlock, readEndFooter, readStreamSource, type VhdStreamFaults, type VhdStreamInput } from '../src/image/vhd-stream-reader.js';
import { planDynamicOutput } from '../src/image/vhd-stream-writer.js';
import { BAT_OFFSET, DYNAMIC_HEADER_OFFSET } from '../src/image/vhd-layout.js';

const MIB = 1024 * 1024;
const UUID = '6f1c2b3a-0d4e-4f5a-8b6c-7d8e9f0a1b2c';
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-vhd-stream-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

class Fault extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}
const FAULTS: VhdStreamFaults = {
  badInput: (m) => new Fault('badInput', m),
  outOfOrder: (m) => new Fault('outOfOrder', m),
  badArgument: (m) => new Fault('badArgument', m),
  unsupported: (m) => new Fault('unsupported', m),
};

/** A whole buffer as a one-pass input. */
function bufferInput(bytes: Uint8Array): VhdStreamInput {
  let at = 0;
  const input = {
    get position() {
      return BigInt(at);
    },
    faults: FAULTS,
    async readExactly(n: number, what: string) {
      if (at + n > bytes.length) throw FAULTS.badInput(`ended inside ${what}`);
      at += n;
      return bytes.slice(at - n, at);
    },
    async skip(n: bigint, what: string) {
      if (at + Number(n) > bytes.length) throw FAULTS.badInput(`ended inside ${what}`);
      at += Number(n);
    },
    unread(b: Uint8Array) {
      at -= b.length;
    },
    async tail(keep: number) {
      at = bytes.length;
      return { bytes: bytes.slice(bytes.length - keep) };
    },
  };
  return input;
}

async function dynamicTemplate() {
  const p = join(dir, `template-${Math.random()}.vhd`);
  await (await createImage(p, { format: 'vhd-dynamic', virtualSize: 8n * BigInt(MIB), uuid: UUID })).close();
  return { path: p, bytes: readFileSync(p) };
}

describe('the VHD stream writer and reader', () => {
  it('lay the footer copy, header and BAT out where createImage does', async () => {
    const file = await dynamicTemplate();
    const header = readDynamicHeader(file.bytes.subarray(DYNAMIC_HEADER_OFFSET));
    const plan = planDynamicOutput({ size: 8n * BigInt(MIB), blockSize: header.blockSize, uuid: UUID, order: [], template: header });
    expect(readVhdFooter(plan.prefix).dataOffset).toBe(readVhdFooter(file.bytes).dataOffset);
    expect(readVhdFooter(plan.prefix).dataOffset).toBe(BigInt(DYNAMIC_HEADER_OFFSET));
    // The header and BAT are byte for byte the file's (the footers differ only in their time stamps).
    expect(Buffer.from(plan.prefix.subarray(VHD_FOOTER_SIZE)).equals(file.bytes.subarray(VHD_FOOTER_SIZE, plan.prefix.length))).toBe(true);
    expect(readDynamicHeader(plan.prefix.subarray(DYNAMIC_HEADER_OFFSET, DYNAMIC_HEADER_OFFSET + DYNAMIC_HEADER_SIZE)).tableOffset).toBe(BigInt(BAT_OFFSET));
  });

  it('a written stream opens as a file (ours and qemu-img convert) and the reader gives its blocks back in one pass', async () => {
    const file = await dynamicTemplate();
    const header = readDynamicHeader(file.bytes.subarray(DYNAMIC_HEADER_OFFSET));
    const bs = header.blockSize;
    const order = [3, 0];
    const plan = planDynamicOutput({ size: 8n * BigInt(MIB), blockSize: bs, uuid: UUID, order, template: header });
    const blocks = order.map(() => randomBytes(bs));
    const stream = Buffer.concat([plan.prefix, ...blocks.flatMap((b) => [plan.bitmap, b]), plan.footer]);
    const p = join(dir, 'streamed.vhd');
    writeFileSync(p, stream);
    // qemu reads it as the disk the blocks make (its vpc driver has no check): block 3, then block 0, the rest zeros.
    const qraw = join(dir, 'streamed.raw');
    expect(spawnSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', p, qraw], { encoding: 'utf8' }).status).toBe(0);
    const want = Buffer.alloc(8 * MIB);
    blocks[0]!.copy(want, 3 * bs);
    blocks[1]!.copy(want, 0);
    expect(readFileSync(qraw).equals(want)).toBe(true);
    const img = await openImage(p);
    try {
      const got = new Uint8Array(bs);
      await img.read(3n * BigInt(bs), got);
      expect(Buffer.from(got).equals(blocks[0]!)).toBe(true);
      await img.read(1n * BigInt(bs), got);
      expect(got.every((b) => b === 0)).toBe(true);
    } finally {
      await img.close();
    }
    const input = bufferInput(stream);
    const src = await readStreamSource(input, 'vhd', undefined);
    if (src.kind !== 'vhd-dynamic') throw new Error(`read as ${src.kind}`);
    expect([...src.order]).toEqual(order);
    for (let k = 0; k < order.length; k++) {
      const place = blockInFileOrder(src, k);
      await enterBlock(input, src, place);
      expect(Buffer.from(await input.readExactly(bs, 'block')).equals(blocks[k]!)).toBe(true);
    }
    expect((await readEndFooter(input, { diskType: 3, size: src.size })).uniqueId).toBe(UUID);
  });

  it('reports what is wrong as the caller\'s errors', async () => {
    const file = await dynamicTemplate();
    const wrongSize = await readStreamSource(bufferInput(file.bytes), 'vhd', 4n * BigInt(MIB)).catch((e: unknown) => e);
    expect(wrongSize).toMatchObject({ kind: 'badArgument' });
    const damaged = Buffer.from(file.bytes);
    damaged[DYNAMIC_HEADER_OFFSET + 40] ^= 1;
    const bad = await readStreamSource(bufferInput(damaged), 'vhd', undefined).catch((e: unknown) => e);
    expect(bad).toMatchObject({ kind: 'badInput' });
    expect((bad as Error).message).toContain('[VHD_BAD_CHECKSUM]');
    expect(() => planDynamicOutput({ size: 8n * BigInt(MIB), blockSize: 2 * MIB, uuid: UUID, order: [1, 1], template: readDynamicHeader(file.bytes.subarray(DYNAMIC_HEADER_OFFSET)) })).toThrow(
      expect.objectContaining({ code: 'IMAGE_BAD_ARGUMENT' }),
    );
    expect(() => planDynamicOutput({ size: 3n << 40n, blockSize: 2 * MIB, uuid: UUID, order: [], template: readDynamicHeader(file.bytes.subarray(DYNAMIC_HEADER_OFFSET)) })).toThrow(
      expect.objectContaining({ code: 'VHD_UNSUPPORTED_SIZE' }),
    );
  });
});
