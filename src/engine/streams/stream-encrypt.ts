/**
 * createEncryptStream: a VHD (dynamic or fixed) or raw image stream in, the
 * encrypted image stream out, in one pass with bounded memory. The output has
 * encryptImage's layout: the LUKS header area (a whole number of VHD blocks)
 * then the source disk sector for sector; keys are made and sealed in the
 * vault by the engine's prepareEncryption, exactly as encryptImage does.
 */
import { randomUUID } from 'node:crypto';
import { BAT_UNALLOCATED, DEFAULT_BLOCK_SIZE, VhdDiskType } from '../../image/index.js';
import { EngineError } from '../errors.js';
import { usedRangesOf } from '../../luks/index.js';
import { isVhdcryptError } from '../../errors.js';
import {
  checkNewVolumeOptions, chooseDataOffset, chooseSectorSize, discardSecret, prepareEncryption, type EncryptionFormat, type PayloadLayout,
} from '../../volume/index.js';
import type { EncryptOptions } from '../file-jobs/encrypt-image.js';
import type { OutputFormat } from '../run-options.js';
import { CryptStreamBase, type CryptStreamOptions, type StreamOutput } from './stream-duplex.js';
import { blockInFileOrder, readEndFooter, enterBlock, type DynamicSource, type FlatSource } from '../../image/vhd-stream-reader.js';
import { fixedFooter, planDynamicOutput } from '../../image/vhd-stream-writer.js';
import { runDeltaStream } from './stream-delta.js';
import { cryptRun, openCryptSession, zeroSource, type CryptSession } from './stream-session.js';

export interface EncryptStreamOptions extends Omit<EncryptOptions, 'force' | 'resume' | 'outFormat' | 'checkpointBytes' | 'signal' | 'parentDirs' | 'allowAbsoluteParents'>, CryptStreamOptions {
  /** A name for the source, recorded with the vault secret. */
  readonly sourceName?: string;
  /** With `parentImage`: where the differencing VHD stream is spooled (see stream-delta.ts; default the temp directory). */
  readonly spoolDir?: string;
}

/** What an encrypt stream did; `secretId` names the vault secret that opens the output. */
export interface StreamResult {
  readonly operation: 'encrypt' | 'decrypt';
  readonly format: EncryptionFormat;
  /** 'vhd-differencing': an encrypted delta (parentImage). */
  readonly container: OutputFormat | 'vhd-differencing';
  readonly sourceVirtualSize: bigint;
  readonly outputVirtualSize: bigint;
  /** Bytes of the output stream. */
  readonly outputBytes: bigint;
  readonly dataOffset: bigint;
  readonly sectorSize: number;
  readonly bytesProcessed: bigint;
  readonly backend: string;
  readonly kernel: string;
  readonly threads: number;
  readonly seconds: number;
  readonly secretId: string | null;
  readonly kekId: string | null;
  readonly vaultUri: string | null;
  readonly luksUuid: string | null;
}

const ZEROS = new Uint8Array(64 << 10);

/** True when `b` is all zeros (memcmp against zeros, 64 KiB at a time: a byte loop took 0.1 s over a 16 MiB header area). */
function isAllZero(b: Uint8Array): boolean {
  for (let o = 0; o < b.length; o += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - o);
    if (Buffer.compare(b.subarray(o, o + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** A Duplex: write the source image's bytes, read the encrypted image's bytes. */
export class EncryptStream extends CryptStreamBase<StreamResult, EncryptStreamOptions> {
  constructor(opts: EncryptStreamOptions = {}) {
    checkNewVolumeOptions(opts);
    super(opts);
  }

  protected async run(out: StreamOutput): Promise<StreamResult> {
    const o = this.opts;
    if (o.parentImage !== undefined) return runDeltaStream(this.input, { ...o, parentImage: o.parentImage }, out);
    const started = performance.now();
    const input = this.input;
    const src = await this.readSource();
    const format = o.format ?? 'luks2';
    const keyBits = o.keySize ?? 512;
    const sectorSize = chooseSectorSize(format, o.sectorSize, src.size);
    const blockSize = src.kind === 'vhd-dynamic' ? src.blockSize : DEFAULT_BLOCK_SIZE;
    const dataOffset = chooseDataOffset(format, o.dataOffset, blockSize);
    // An unknown size (raw or fixed stream without sourceSize) only matters for LUKS's sanity check: the segment is dynamic.
    const diskSize = dataOffset + (src.size ?? BigInt(sectorSize));
    const containerUuid = randomUUID();
    const prepared = await prepareEncryption(
      { format, keyBits, sectorSize, dataOffset, diskSize, containerUuid, sourceName: o.sourceName ?? 'stream' },
      { ...o, recoveryPassphrase: o.addRecoveryPassphrase },
    );
    let session: CryptSession;
    let payloadBytes: bigint;
    let outputVirtualSize: bigint;
    try {
      try {
        session = openCryptSession(o, prepared.volumeKey, true, sectorSize, out);
      } finally {
        prepared.volumeKey.fill(0);
      }
      try {
        if (src.kind === 'vhd-dynamic') {
          outputVirtualSize = dataOffset + src.size;
          payloadBytes = await this.encryptDynamic(src, session, prepared.header, prepared.layout, dataOffset, outputVirtualSize, containerUuid);
        } else {
          payloadBytes = await this.encryptFlat(src, session, prepared.header, prepared.layout, sectorSize);
          outputVirtualSize = dataOffset + payloadBytes;
          if (src.kind === 'vhd-fixed') await session.queue.bytes(fixedFooter(outputVirtualSize, containerUuid));
        }
        await session.queue.drain();
      } finally {
        await session.close();
      }
    } catch (e) {
      // A stream has no journal to resume from: the output is incomplete, so the key sealed for it goes (soft delete).
      if (prepared.secretId !== null) await discardSecret({ secretId: prepared.secretId, vaultUri: prepared.vaultUri ?? o.vault }, o.vaultCredentials);
      throw e;
    }
    const ran = session.ran;
    const seconds = (performance.now() - started) / 1000;
    return {
      operation: 'encrypt',
      format,
      container: src.kind,
      sourceVirtualSize: payloadBytes,
      outputVirtualSize,
      outputBytes: out.written,
      dataOffset,
      sectorSize,
      bytesProcessed: session.queue.processed,
      backend: ran?.backend ?? o.backend ?? 'auto',
      kernel: ran?.kernel ?? 'none',
      threads: session.threads,
      seconds,
      secretId: prepared.secretId,
      kekId: prepared.kekId,
      vaultUri: prepared.vaultUri,
      luksUuid: prepared.luksUuid,
    };
  }

  /** Raw and fixed: the header area, the data encrypted in order, then (fixed) the footer. Returns the source size. */
  private async encryptFlat(src: FlatSource, s: CryptSession, header: Uint8Array | null, layout: PayloadLayout, sectorSize: number): Promise<bigint> {
    const input = this.input;
    if (header) await s.queue.bytes(header);
    s.total = src.size ?? 0n;
    const keep = src.kind === 'vhd-fixed' ? 512 : 0;
    const source = (max: number) => input.readSome(max, keep);
    let n: bigint;
    try {
      n = await cryptRun(s, source, 0n, null, sectorSize, (off) => layout.tweak(off), false);
    } catch (e) {
      // Data ending inside a crypto sector is most often a cut stream: say so when we can tell.
      if (isVhdcryptError(e, 'ENGINE_UNSUPPORTED_SECTOR_SIZE')) {
        if (src.kind === 'vhd-fixed') await readEndFooter(input, { diskType: VhdDiskType.fixed, size: 'before' });
        if (src.size !== null) throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream: shorter than sourceSize ${src.size} (truncated stream?)`);
      }
      throw e;
    }
    if (src.kind === 'vhd-fixed') {
      await readEndFooter(input, { diskType: VhdDiskType.fixed, size: 'before' });
    }
    if (n === 0n) throw new EngineError('ENGINE_STREAM_BAD_INPUT', 'input stream: no disk data');
    if (src.size !== null && n !== src.size) {
      throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream: ${n} bytes of disk data, sourceSize says ${src.size} (truncated stream?)`);
    }
    return n;
  }

  /**
   * Dynamic: output block i + shift holds input block i encrypted. Emission
   * order (and so the BAT): the header area's non-zero blocks, the input's
   * blocks in file order, then (noSparse) its unallocated blocks as encrypted zeros.
   */
  private async encryptDynamic(
    src: DynamicSource,
    s: CryptSession,
    header: Uint8Array | null,
    layout: PayloadLayout,
    dataOffset: bigint,
    outSize: bigint,
    uuid: string,
  ): Promise<bigint> {
    const input = this.input;
    const bs = src.blockSize;
    const shift = Number(dataOffset / BigInt(bs));
    // A header block is emitted when its bytes are not all zeros, as the file job allocates it. Only the ranges the
    // header uses are looked at: the rest of the region is zeros by construction, and pages never written would
    // each cost a fault to read (4096 of them for a 16 MiB LUKS2 region).
    const used = header !== null ? await usedRangesOf(header) : [];
    const headerBlocks: number[] = [];
    for (let b = 0; b < shift; b++) {
      const from = b * bs;
      const to = from + bs;
      if (used.some(([s0, e0]) => s0 < to && e0 > from && !isAllZero(header!.subarray(Math.max(s0, from), Math.min(e0, to))))) headerBlocks.push(b);
    }
    // Emission order, 4 bytes per block: header blocks, the input's blocks in file order, then holes (noSparse).
    const holes = this.opts.noSparse ? src.entries - src.order.length : 0;
    const order = new Uint32Array(headerBlocks.length + src.order.length + holes);
    order.set(headerBlocks, 0);
    for (let k = 0; k < src.order.length; k++) order[headerBlocks.length + k] = src.order[k]! + shift;
    if (holes > 0) {
      let k = headerBlocks.length + src.order.length;
      for (let i = 0; i < src.entries; i++) if (src.bat[i] === BAT_UNALLOCATED) order[k++] = i + shift;
    }
    const plan = planDynamicOutput({ size: outSize, blockSize: bs, uuid, order, template: src.header });
    const q = s.queue;
    const blockPayload = (i: number) => {
      const start = BigInt(i) * BigInt(bs);
      const end = start + BigInt(bs) < src.size ? start + BigInt(bs) : src.size;
      return { start, len: Number(end - start) };
    };
    s.total = BigInt(src.order.length + holes) * BigInt(bs);
    await q.bytes(plan.prefix);
    for (const b of headerBlocks) {
      await q.bytes(plan.bitmap);
      await q.bytes(header!.subarray(b * bs, (b + 1) * bs));
    }
    const tweak = (off: bigint) => layout.tweak(off);
    for (let k = 0; k < src.order.length; k++) {
      const p = blockInFileOrder(src, k);
      await enterBlock(input, src, p);
      const { start, len } = blockPayload(p.index);
      await q.bytes(plan.bitmap);
      const left = BigInt(len);
      const n = await cryptRun(s, (max) => input.readRequired(max, `block ${p.index}`), start, left, layout.sectorSize, tweak, false);
      if (n < left) throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream ended early inside block ${p.index} (truncated image?)`);
      // The disk ends inside this block: skip the input's tail of it; ours reads as zeros.
      if (len < bs) {
        await input.skip(BigInt(bs - len), `the end of block ${p.index}`);
        await q.zeros(bs - len);
      }
    }
    for (let k = headerBlocks.length + src.order.length; k < order.length; k++) {
      const { start, len } = blockPayload(order[k]! - shift);
      await q.bytes(plan.bitmap);
      await cryptRun(s, zeroSource(len), start, BigInt(len), layout.sectorSize, tweak, false);
      if (len < bs) await q.zeros(bs - len);
    }
    await readEndFooter(input, { diskType: VhdDiskType.dynamic, size: src.size });
    await q.bytes(plan.footer);
    return src.size;
  }
}

/** Encrypt an image stream (see EncryptStreamOptions); the result is on `stream.result` once it ends. */
export function createEncryptStream(opts: EncryptStreamOptions = {}): EncryptStream {
  return new EncryptStream(opts);
}
