/**
 * Encrypting a delta: a plaintext differencing VHD (a link of a backup chain) into an encrypted differencing VHD
 * whose parent is the already encrypted image of its parent. The child's virtual disk is the same LUKS volume as
 * its parent's: the header region is read through from the base, the volume key is the base's (unlocked from its
 * vault secret; no new secret), and so is the sector size and data offset. Because the XTS tweak of a sector
 * depends only on its offset, a child encrypted under its parent's key holds exactly the changed blocks.
 *
 * What the encrypted child holds, block by block (VHD spec "Implementing a Differencing Hard Disk"):
 *  - each block the plaintext child holds, shifted by the LUKS data offset (a whole number of child blocks);
 *  - in it, every crypto sector the child covers at all, encrypted whole and marked present whole. Where the
 *    child covers a crypto sector (4096 bytes on LUKS2) only in part, the rest comes from the parent chain's
 *    plaintext (its ciphertext decrypted with the unlocked key), so every reader gets valid ciphertext;
 *  - every crypto sector of that block where the parent chain holds nothing (a hole, which reads as plaintext
 *    zeros): encrypted zeros. Otherwise the chain would show the parent's zero bytes under an allocated block,
 *    and anything reading the block as allocated would decrypt them into garbage (the invariant the NBD server's
 *    first write into a hole keeps too: a block allocated anywhere in an encrypted chain is valid ciphertext
 *    throughout).
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createXts, type Xts } from '../../crypto/index.js';
import { bitmapTest, createImage, openImage, parentSearch, SparseVhdImage, type DiskImage, type WritableImage } from '../../image/index.js';
import { unlockImage, type PayloadLayout, type UnlockImageOptions } from '../../volume/index.js';
import { EngineError, mapWriteError } from '../errors.js';
import { runWarnings, type RunOptions, type RunResult } from '../run-options.js';
import { sealedSourceUuid, writeManifest } from './chain-manifest.js';
import { checkDestination, commitOutput, discardOutput, findLeftover, outputPaths } from './safe-output.js';

export interface DeltaEncryptOptions extends RunOptions, Omit<UnlockImageOptions, 'vault' | 'vaultCredentials' | 'signal'> {
  /** The encrypted image of the child's parent (fixed, dynamic or differencing, made by vhdcrypt). */
  readonly parentImage: string;
}

/** The chain facts a delta is encrypted under: the parent's unlocked volume. */
interface DeltaVolume {
  readonly parent: DiskImage;
  readonly layout: PayloadLayout;
  readonly xts: Xts;
}

/** Open a plaintext differencing VHD on its own (its parent need not exist any more). */
export async function openDeltaSource(src: string): Promise<SparseVhdImage> {
  const child = await openImage(src, { format: 'vhd', withoutParent: true });
  if (!(child instanceof SparseVhdImage) || child.format !== 'vhd-differencing') {
    await child.close();
    throw new EngineError('ENGINE_DELTA_MISMATCH', `${src}: --parent-image takes a differencing VHD, not a ${child.format} image`);
  }
  return child;
}

/** Refuse a child that does not fit its encrypted parent's volume: sizes, block alignment of the data offset. */
export function checkDeltaFits(child: SparseVhdImage, parent: DiskImage, layout: PayloadLayout): void {
  if (child.virtualSize !== layout.payloadSize || parent.virtualSize !== layout.dataOffset + child.virtualSize) {
    throw new EngineError(
      'ENGINE_DELTA_MISMATCH',
      `${child.path}: its ${child.virtualSize}-byte disk does not match the ${layout.payloadSize}-byte encrypted disk of ${parent.path}: virtual sizes must match`,
    );
  }
  const bs = BigInt(child.blockSize!);
  if (layout.dataOffset % bs !== 0n) {
    throw new EngineError('ENGINE_DELTA_MISMATCH', `${child.path}: ${bs}-byte blocks do not line up with the ${layout.dataOffset}-byte LUKS data offset of ${parent.path}`);
  }
}

/** Bytes of payload put through AES-XTS. */
interface DeltaStats {
  bytes: bigint;
  blocks: number;
}

/**
 * Encrypt every block `child` holds into `out` (an encrypted differencing image over the parent chain, at the same
 * virtual offsets shifted by the data offset), as the module header describes.
 */
export async function encryptDeltaBlocks(child: SparseVhdImage, out: WritableImage, vol: DeltaVolume, signal?: AbortSignal): Promise<DeltaStats> {
  const { layout, xts, parent } = vol;
  const ss = layout.sectorSize;
  const per = ss / 512;
  const d = layout.dataOffset;
  const bs = child.blockSize!;
  const size = Number(child.virtualSize);
  const stats: DeltaStats = { bytes: 0n, blocks: 0 };
  for (let blk = 0; blk < child.blockCount; blk++) {
    if (signal?.aborted) throw new EngineError('ENGINE_ABORTED', 'interrupted', { cause: signal.reason });
    const map = await child.ownBitmap(blk);
    if (map === null) continue;
    const start = blk * bs;
    const len = Math.min(bs, size - start);
    const n = len / ss;
    // Which crypto sectors the child covers, whole or in part.
    const present = new Uint8Array(n); // 0 none, 1 part, 2 whole
    let any = false;
    for (let k = 0; k < n; k++) {
      let bits = 0;
      for (let s = k * per; s < (k + 1) * per; s++) if (bitmapTest(map, s)) bits++;
      present[k] = bits === 0 ? 0 : bits === per ? 2 : 1;
      if (bits > 0) any = true;
    }
    if (!any) continue;
    const parentHeld = await heldByChain(parent, d + BigInt(start), len, ss);
    const plain = new Uint8Array(len);
    // Parent plaintext under the child's partial sectors, read and decrypted run by run.
    for (let k = 0; k < n; ) {
      if (present[k] !== 1 || !parentHeld[k]) {
        k++;
        continue;
      }
      let e = k + 1;
      while (e < n && present[e] === 1 && parentHeld[e]) e++;
      const view = plain.subarray(k * ss, e * ss);
      const off = BigInt(start + k * ss);
      await parent.read(d + off, view);
      const t = layout.tweak(off);
      xts.decryptSectors(view, t.firstTweak, ss, { tweakStep: t.tweakStep });
      k = e;
    }
    // The child's own sectors over it.
    const own = new Uint8Array(len);
    await child.readOwnData(blk, 0, own);
    for (let s = 0; s < len / 512; ) {
      if (!bitmapTest(map, s)) {
        s++;
        continue;
      }
      let e = s + 1;
      while (e < len / 512 && bitmapTest(map, e)) e++;
      plain.set(own.subarray(s * 512, e * 512), s * 512);
      s = e;
    }
    own.fill(0);
    // Encrypt and write each run of sectors this link will hold: the child's, and the parent's holes.
    for (let k = 0; k < n; ) {
      if (present[k] === 0 && parentHeld[k]) {
        k++;
        continue;
      }
      let e = k + 1;
      while (e < n && (present[e] !== 0 || !parentHeld[e])) e++;
      const view = plain.subarray(k * ss, e * ss);
      const off = BigInt(start + k * ss);
      const t = layout.tweak(off);
      xts.encryptSectors(view, t.firstTweak, ss, { tweakStep: t.tweakStep });
      try {
        await out.write(d + off, view);
      } catch (err) {
        throw mapWriteError(err, out.path);
      }
      stats.bytes += BigInt(view.length);
      k = e;
    }
    plain.fill(0);
    stats.blocks++;
  }
  return stats;
}

/** For each crypto sector of [offset, offset + length): true when the chain holds any of it (not a hole). */
async function heldByChain(chain: DiskImage, offset: bigint, length: number, ss: number): Promise<boolean[]> {
  const held = new Array<boolean>(length / ss).fill(false);
  for await (const e of chain.extents({ offset, length: BigInt(length) })) {
    if (!e.allocated) continue;
    const a = Number(e.offset - offset);
    const b = a + Number(e.length);
    for (let k = Math.floor(a / ss); k < Math.ceil(b / ss); k++) held[k] = true;
  }
  return held;
}

/** Encrypt the differencing VHD at `src` into `dst`, a differencing VHD whose parent is `opts.parentImage`. */
export async function encryptDelta(src: string, dst: string, opts: DeltaEncryptOptions): Promise<RunResult> {
  const started = performance.now();
  const warnings = runWarnings(opts);
  const paths = outputPaths(dst);
  const child = await openDeltaSource(src);
  for (const w of child.warnings) warnings.warn(w);
  let parent: DiskImage | null = null;
  let output: WritableImage | null = null;
  let xts: Xts | null = null;
  let volumeKey: Uint8Array | null = null;
  let ownsTemp = false;
  try {
    await checkDestination(src, paths.dest, opts.force === true);
    // A delta is written in one pass (no journal): whatever an earlier run left is started over.
    await findLeftover(paths, { force: opts.force, resume: opts.resume }, warnings.warn);
    await discardOutput(paths);
    parent = await openImage(opts.parentImage, { format: 'vhd', ...parentSearch(opts) });
    for (const w of parent.warnings) warnings.warn(w);
    const unlocked = await unlockImage(parent, { ...opts, signal: opts.signal });
    volumeKey = unlocked.volumeKey;
    const layout = unlocked.layout;
    checkDeltaFits(child, parent, layout);
    // The parent image's sealed manifest names the plaintext disk it encrypts: the one this child was made from.
    const made = unlocked.info ? await sealedSourceUuid(parent.path, volumeKey, unlocked.info.uuid) : null;
    const named = child.dynamicHeader!.parentUniqueId;
    if (made !== null && made !== named) {
      throw new EngineError('ENGINE_DELTA_MISMATCH', `${src}: it was made from another disk than the one ${opts.parentImage} encrypts (their UUIDs differ)`);
    }
    xts = createXts(volumeKey, { backend: opts.backend ?? 'auto' });
    output = await createImage(paths.temp, { format: 'vhd-differencing', parent: opts.parentImage, blockSize: child.blockSize!, parentSearch: parentSearch(opts) });
    ownsTemp = true;
    const dataStarted = performance.now();
    const stats = await encryptDeltaBlocks(child, output, { parent, layout, xts }, opts.signal);
    const dataSeconds = (performance.now() - dataStarted) / 1000;
    const done = output;
    output = null;
    await done.close();
    await commitOutput(paths, opts.force === true);
    ownsTemp = false;
    if (unlocked.info) await writeManifest(paths.dest, volumeKey, { luksUuid: unlocked.info.uuid, dataOffset: layout.dataOffset, sectorSize: layout.sectorSize }, child.uuid ?? null);
    const seconds = (performance.now() - started) / 1000;
    return {
      operation: 'encrypt',
      source: resolve(src),
      destination: paths.dest,
      format: layout.format,
      container: 'vhd-differencing',
      sourceVirtualSize: child.virtualSize,
      outputVirtualSize: parent.virtualSize,
      outputFileSize: BigInt((await stat(paths.dest)).size),
      dataOffset: layout.dataOffset,
      sectorSize: layout.sectorSize,
      bytesProcessed: stats.bytes,
      bytesTotal: stats.bytes,
      backend: xts.backend,
      kernel: xts.kernel,
      threads: 1,
      directWrites: false,
      seconds,
      dataSeconds,
      mbPerSecond: seconds > 0 ? Number(stats.bytes) / 1e6 / seconds : 0,
      resumed: false,
      secretId: unlocked.secretId,
      kekId: null,
      vaultUri: unlocked.vaultUri,
      luksUuid: unlocked.info?.uuid ?? null,
      warnings: warnings.list,
    };
  } finally {
    volumeKey?.fill(0);
    xts?.dispose();
    if (output) await Promise.allSettled([output.close()]);
    await Promise.allSettled([child.close(), parent?.close()]);
    if (ownsTemp) await discardOutput(paths);
  }
}
