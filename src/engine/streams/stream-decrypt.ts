/**
 * createDecryptStream: an encrypted image stream (as encryptImage or
 * createEncryptStream write it: dynamic or fixed VHD, or raw) in, the
 * plaintext image stream out, in one pass. The LUKS header area arrives
 * first: it alone is buffered, the keyslot is opened (the caller's secret or
 * the vault, as unlockImage does), then the payload streams through the pool.
 */
import { randomUUID } from 'node:crypto';
import { VhdDiskType } from '../../image/index.js';
import { LUKS_MAX_HEADER_REGION, type LuksVolumeInfo } from '../../luks/index.js';
import {
  probeLuksHeader, unlockVolume, type EncryptionFormat, type PayloadLayout, type UnlockedImage,
} from '../../volume/index.js';
import type { DecryptOptions } from '../file-jobs/decrypt-image.js';
import { EngineError } from '../errors.js';
import { CryptStreamBase, type CryptStreamOptions, type StreamOutput } from './stream-duplex.js';
import type { StreamResult } from './stream-encrypt.js';
import { cryptRun, memorySource, openCryptSession, type CryptSession } from './stream-session.js';
import { blockInFileOrder, enterBlock, readEndFooter, type BlockPlace, type DynamicSource, type FlatSource } from '../../image/vhd-stream-reader.js';
import { fixedFooter, planDynamicOutput } from '../../image/vhd-stream-writer.js';

export interface DecryptStreamOptions extends Omit<DecryptOptions, 'force' | 'resume' | 'outFormat' | 'checkpointBytes' | 'signal' | 'parentDirs' | 'allowAbsoluteParents'>, CryptStreamOptions {
}

/** A first look covers cryptsetup's default 16 MiB LUKS2 header area (as readLuksRegion). */
const PROBE = 16n << 20n;
/** Dynamic input: the first look, then PROBE, then LUKS_MAX_HEADER_REGION when the header needs more. */
const LOOK = 64n << 10n;
/** Dynamic input: payload bytes held while the header's blocks are still to come. */
const HOLD = 16n << 20n;

/** The virtual disk's first bytes as they arrived (dynamic: with the blocks that carried them). */
interface Prefix {
  readonly bytes: Uint8Array;
  readonly info: LuksVolumeInfo | null;
  /** Dynamic: blocks already read, in file order (the first consumed.length of src.order), and their data. */
  readonly consumed: readonly BlockPlace[];
  readonly held: ReadonlyMap<number, Uint8Array>;
}

/** How the volume layer names the stream in messages. */
const NAME = 'input stream';

/** The stream's first bytes as far as they arrived, for the volume layer's header probe. */
function probe(bytes: Uint8Array, size: bigint | null, complete: boolean): Promise<LuksVolumeInfo | null | 'more'> {
  return probeLuksHeader({ name: NAME, header: bytes, size, uuid: null }, complete);
}

/** A Duplex: write the encrypted image's bytes, read the plaintext image's bytes. */
export class DecryptStream extends CryptStreamBase<StreamResult, DecryptStreamOptions> {
  constructor(opts: DecryptStreamOptions = {}) {
    super(opts);
  }

  protected async run(out: StreamOutput): Promise<StreamResult> {
    const o = this.opts;
    const started = performance.now();
    const src = await this.readSource();
    const prefix = src.kind === 'vhd-dynamic' ? await this.dynamicPrefix(src) : await this.flatPrefix(src);
    const diskSize = src.size;
    const u = await this.unlock(prefix, src);
    const layout = u.layout;
    let session: CryptSession;
    try {
      session = openCryptSession(o, u.volumeKey, false, layout.sectorSize, out);
    } finally {
      u.volumeKey.fill(0);
    }
    let plainSize: bigint;
    try {
      if (src.kind === 'vhd-dynamic') {
        plainSize = await this.decryptDynamic(src, prefix, session, layout);
      } else {
        plainSize = await this.decryptFlat(src, prefix, session, layout, u.info);
        if (src.kind === 'vhd-fixed') await session.queue.bytes(fixedFooter(plainSize, randomUUID()));
      }
      await session.queue.drain();
    } finally {
      await session.close();
    }
    const ran = session.ran;
    return {
      operation: 'decrypt',
      format: layout.format as EncryptionFormat,
      container: src.kind,
      sourceVirtualSize: diskSize ?? layout.dataOffset + plainSize,
      outputVirtualSize: plainSize,
      outputBytes: out.written,
      dataOffset: layout.dataOffset,
      sectorSize: layout.sectorSize,
      bytesProcessed: session.queue.processed,
      backend: ran?.backend ?? o.backend ?? 'auto',
      kernel: ran?.kernel ?? 'none',
      threads: session.threads,
      seconds: (performance.now() - started) / 1000,
      secretId: u.secretId,
      kekId: null,
      vaultUri: u.vaultUri,
      luksUuid: u.info?.uuid ?? null,
    };
  }

  /** Raw and fixed: the first 16 MiB (or what there is), more when the LUKS header says so. */
  private async flatPrefix(src: FlatSource): Promise<Prefix> {
    const keep = src.kind === 'vhd-fixed' ? 512 : 0;
    const readUpTo = async (buf: Uint8Array, from: number): Promise<number> => {
      let at = from;
      while (at < buf.length) {
        const piece = await this.input.readSome(buf.length - at, keep);
        if (!piece) break;
        buf.set(piece, at);
        at += piece.length;
      }
      return at;
    };
    let buf = new Uint8Array(Number(PROBE));
    let n = await readUpTo(buf, 0);
    let info = await probe(buf.subarray(0, n), src.size, n < buf.length);
    if (info === 'more') {
      const bigger = new Uint8Array(Number(LUKS_MAX_HEADER_REGION));
      bigger.set(buf);
      buf = bigger;
      n = await readUpTo(buf, n);
      info = await probe(buf.subarray(0, n), src.size, true);
    }
    if (info === 'more') throw new EngineError('ENGINE_STREAM_BAD_INPUT', 'input stream: the LUKS header is truncated');
    if (info && info.dataOffset > BigInt(n)) {
      throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream: LUKS data offset ${info.dataOffset} is past the ${n} bytes of the stream (truncated image?)`);
    }
    return { bytes: buf.subarray(0, n), info, consumed: [], held: new Map() };
  }

  /**
   * Dynamic: blocks arrive in file order, which need not be disk order. The
   * blocks under the header area are gathered (first a 64 KiB look, which
   * holds a LUKS1 phdr or both default LUKS2 metadata copies, then up to the
   * data offset); payload blocks arriving meanwhile are held, up to 16 MiB
   * of them, and decrypted first once the key is open.
   */
  private async dynamicPrefix(src: DynamicSource): Promise<Prefix> {
    const bs = BigInt(src.blockSize);
    const upTo = (n: bigint) => {
      const r = ((n + bs - 1n) / bs) * bs;
      return r < src.size ? r : src.size;
    };
    const held = new Map<number, Uint8Array>();
    const consumed: BlockPlace[] = [];
    let heldPayload = 0n;
    let cursor = 0;
    let need = upTo(LOOK);
    // Blocks under `need` still to come (counted once per need: no rescans of a large BAT).
    const pendingUnder = () => {
      let n = 0;
      for (let k = cursor; k < src.order.length; k++) if (BigInt(src.order[k]!) * bs < need) n++;
      return n;
    };
    const gather = async () => {
      for (let pending = pendingUnder(); pending > 0; ) {
        const p = blockInFileOrder(src, cursor++);
        if (BigInt(p.index) * bs < need) pending--;
        if (BigInt(p.index) * bs >= need) {
          heldPayload += bs;
          if (heldPayload > HOLD) {
            throw new EngineError('ENGINE_STREAM_ORDER', `input stream: more than ${HOLD} bytes of blocks come before the blocks of the LUKS header area; a one-pass decrypt needs the header sooner`);
          }
        }
        await enterBlock(this.input, src, p);
        held.set(p.index, await this.input.readExactly(src.blockSize, `block ${p.index}`, true));
        consumed.push(p);
      }
    };
    // The header area as gathered so far; made again only when more was gathered (each is up to 16 MiB of new pages).
    let assembled: { need: bigint; blocks: number; buf: Uint8Array } | null = null;
    const assemble = () => {
      if (assembled !== null && assembled.need === need && assembled.blocks === held.size) return assembled.buf;
      const buf = new Uint8Array(Number(need));
      for (const [i, data] of held) {
        const at = BigInt(i) * bs;
        if (at < need) buf.set(data.subarray(0, Number(need - at < bs ? need - at : bs)), Number(at));
      }
      assembled = { need, blocks: held.size, buf };
      return buf;
    };
    await gather();
    let info = await probe(assemble(), src.size, need === src.size);
    for (const next of [PROBE, LUKS_MAX_HEADER_REGION]) {
      if (info !== 'more') break;
      need = upTo(next);
      await gather();
      info = await probe(assemble(), src.size, need === src.size || next === LUKS_MAX_HEADER_REGION);
    }
    if (info === 'more') throw new EngineError('ENGINE_STREAM_BAD_INPUT', 'input stream: the LUKS header is truncated');
    if (info && info.dataOffset > need) {
      need = upTo(info.dataOffset);
      await gather();
    }
    return { bytes: assemble(), info, consumed, held };
  }

  /**
   * The volume key and layout from the header bytes, through the volume layer's unlock as decryptImage opens an
   * image: the caller's secret, else the vault (token, LUKS UUID; a plain volume's secret by its id or the dynamic
   * VHD's UUID, its sector size from the secret's tags).
   */
  private unlock(prefix: Prefix, src: StreamSource): Promise<UnlockedImage> {
    // A fixed VHD's footer (and its UUID) comes last: only a dynamic VHD names itself before its data.
    const uuid = src.kind === 'vhd-dynamic' ? src.footer.uniqueId : null;
    return unlockVolume({ name: NAME, header: prefix.bytes, size: src.size, uuid }, this.opts);
  }

  /** Raw and fixed: the payload after the header area, decrypted in order. Returns the plaintext size. */
  private async decryptFlat(src: FlatSource, prefix: Prefix, s: CryptSession, layout: PayloadLayout, info: LuksVolumeInfo | null): Promise<bigint> {
    const input = this.input;
    const keep = src.kind === 'vhd-fixed' ? 512 : 0;
    const off = Number(layout.dataOffset);
    // A LUKS2 segment of fixed size ends there; a dynamic one (and plain) runs to the end of the disk.
    const limit = info && info.dataSize !== 'dynamic' ? info.dataSize : src.size !== null ? layout.payloadSize : null;
    s.total = limit ?? 0n;
    const head = memorySource(prefix.bytes.subarray(off));
    let fromHead = true;
    const source = async (max: number): Promise<Uint8Array | null> => {
      if (fromHead) {
        const piece = await head(max);
        if (piece) return piece;
        fromHead = false;
      }
      return input.readSome(max, keep);
    };
    const n = await cryptRun(s, source, 0n, limit, layout.sectorSize, (x) => layout.tweak(x), true);
    if (n === 0n) throw new EngineError('ENGINE_NOT_ENCRYPTED', 'input stream: the encrypted payload is empty');
    if (src.kind === 'vhd-fixed') {
      await readEndFooter(input, { diskType: VhdDiskType.fixed, size: 'before' });
    } else {
      // Bytes past a fixed-size segment (or a partial last sector) are not payload.
      await input.tail(0, 'the end of the disk');
      if (src.size !== null && input.position !== src.size) {
        throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream: ${input.position} bytes, sourceSize says ${src.size} (truncated stream?)`);
      }
    }
    if (limit !== null && n !== limit) throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream: payload of ${n} bytes, the header says ${limit} (truncated stream?)`);
    return n;
  }

  /** Dynamic: output block j holds input block j + shift decrypted; blocks read with the header first, then the rest in file order. */
  private async decryptDynamic(src: DynamicSource, prefix: Prefix, s: CryptSession, layout: PayloadLayout): Promise<bigint> {
    const input = this.input;
    const bs = src.blockSize;
    if (layout.dataOffset % BigInt(bs) !== 0n) {
      throw new EngineError('ENGINE_UNSUPPORTED_FORMAT', `input stream: LUKS data offset ${layout.dataOffset} is not a whole number of ${bs}-byte VHD blocks; use decryptImage`);
    }
    const shift = Number(layout.dataOffset / BigInt(bs));
    const payloadSize = layout.payloadSize;
    if (payloadSize <= 0n) throw new EngineError('ENGINE_NOT_ENCRYPTED', 'input stream: the encrypted payload is empty');
    const outEntries = Number((payloadSize + BigInt(bs) - 1n) / BigInt(bs));
    const inPayload = (index: number) => index >= shift && index - shift < outEntries;
    const early = prefix.consumed.filter((p) => inPayload(p.index));
    // Emission order, 4 bytes per block: the held blocks, then the rest in file order.
    let later = 0;
    for (let k = prefix.consumed.length; k < src.order.length; k++) if (inPayload(src.order[k]!)) later++;
    const order = new Uint32Array(early.length + later);
    early.forEach((p, k) => (order[k] = p.index - shift));
    for (let k = prefix.consumed.length, o = early.length; k < src.order.length; k++) if (inPayload(src.order[k]!)) order[o++] = src.order[k]! - shift;
    const plan = planDynamicOutput({ size: payloadSize, blockSize: bs, uuid: randomUUID(), order, template: src.header });
    const q = s.queue;
    const tweak = (x: bigint) => layout.tweak(x);
    const span = (p: BlockPlace) => {
      const start = BigInt(p.index - shift) * BigInt(bs);
      const end = start + BigInt(bs) < payloadSize ? start + BigInt(bs) : payloadSize;
      return { start, len: Number(end - start) };
    };
    s.total = BigInt(order.length) * BigInt(bs);
    await q.bytes(plan.prefix);
    for (const p of early) {
      const { start, len } = span(p);
      await q.bytes(plan.bitmap);
      await cryptRun(s, memorySource(prefix.held.get(p.index)!.subarray(0, len)), start, BigInt(len), layout.sectorSize, tweak, false);
      if (len < bs) await q.zeros(bs - len);
    }
    for (let k = prefix.consumed.length; k < src.order.length; k++) {
      const p = blockInFileOrder(src, k);
      if (!inPayload(p.index)) continue;
      await enterBlock(input, src, p);
      const { start, len } = span(p);
      await q.bytes(plan.bitmap);
      const n = await cryptRun(s, (max) => input.readRequired(max, `block ${p.index}`), start, BigInt(len), layout.sectorSize, tweak, false);
      if (n < BigInt(len)) throw new EngineError('ENGINE_STREAM_BAD_INPUT', `input stream ended early inside block ${p.index} (truncated image?)`);
      if (len < bs) {
        await input.skip(BigInt(bs - len), `the end of block ${p.index}`);
        await q.zeros(bs - len);
      }
    }
    await readEndFooter(input, { diskType: VhdDiskType.dynamic, size: src.size });
    await q.bytes(plan.footer);
    return payloadSize;
  }
}

type StreamSource = FlatSource | DynamicSource;

/** Decrypt an encrypted image stream (see DecryptStreamOptions); the result is on `stream.result` once it ends. */
export function createDecryptStream(opts: DecryptStreamOptions = {}): DecryptStream {
  return new DecryptStream(opts);
}
