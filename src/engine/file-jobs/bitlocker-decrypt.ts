/**
 * decryptBitlockerImage: a disk (VHD of any kind, or raw) holding BitLocker volumes, bare or in MBR/GPT
 * partitions, into the same disk with every BitLocker volume decrypted in place, as cryptsetup's activated BITLK
 * device shows it (the relocated header sectors restored, the FVE metadata areas zeros). Everything outside the
 * BitLocker volumes is copied byte for byte, holes kept. XTS volumes go through the worker pool's native kernel
 * (the tweak counts the volume's own sectors); CBC and Elephant volumes are decrypted on this thread through
 * node:crypto. Written safely (temp file 0600, fsync, rename); no resume: a failed run leaves nothing.
 */
import { rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createImage, DEFAULT_BLOCK_SIZE, type DiskImage, type WritableImage } from '../../image/index.js';
import {
  BitlockerError,
  BitlockerVolume,
  diskBytes,
  openDiskVolumes,
  resolveProtector,
  GUID_EOW,
  GUID_NORMAL,
  partitionBytes,
  readDiskLayout,
  readFveMetadata,
  type DiskLayout,
  type Partition,
  type Protector,
  type BitlockerKeyOptions,
} from '../../bitlocker/index.js';
import { CryptPool } from '../pool/crypt-pool.js';
import { SlotRing } from '../pool/slot-ring.js';
import { abortedError } from '../pool/sector-pipeline.js';
import { startJob } from './job-hold.js';
import { PLAINTEXT_CREATE_MODE, checkDestination, commitOutput, discardOutput, plaintextOutputMode, setOutputMode } from './safe-output.js';
import { containerFor } from './output-image.js';
import { isRemoteSource } from './source-image.js';
import type { BackendChoice } from '../../crypto/index.js';
import type { OutputFormat, RunResult } from '../run-options.js';
import { encryptImage } from './encrypt-image.js';
import { outputPaths } from './safe-output.js';

export interface BitlockerDecryptOptions extends BitlockerKeyOptions {
  readonly force?: boolean;
  readonly threads?: number;
  readonly backend?: BackendChoice;
  readonly outFormat?: OutputFormat;
  readonly signal?: AbortSignal;
  readonly onWarning?: (message: string) => void;
  readonly parentDirs?: readonly string[];
  readonly allowAbsoluteParents?: boolean;
}

export interface BitlockerVolumeResult {
  readonly partition: number;
  readonly offset: bigint;
  readonly size: bigint;
  readonly guid: string;
  readonly cipher: string;
  readonly sectorSize: number;
  readonly vmkGuid: string;
}

export interface BitlockerDecryptResult {
  readonly source: string;
  readonly destination: string;
  readonly scheme: DiskLayout['scheme'];
  readonly container: OutputFormat;
  readonly volumes: readonly BitlockerVolumeResult[];
  readonly bytesDecrypted: bigint;
  readonly seconds: number;
  readonly backend: string | null;
  readonly warnings: readonly string[];
}

const CHUNK = 4 << 20;

/** Decrypt the BitLocker volumes of the disk at `src` into a new disk at `dst`. */
export async function decryptBitlockerImage(src: string, dst: string, opts: BitlockerDecryptOptions = {}): Promise<BitlockerDecryptResult> {
  const started = performance.now();
  const { paths, source, warnings, hold } = await startJob(src, dst, { ...opts, onWarning: opts.onWarning });
  let protector: Protector | null = null;
  let opened: Awaited<ReturnType<typeof openDiskVolumes>> | null = null;
  let ring: SlotRing | null = null;
  let failure: unknown;
  try {
    await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
    protector = await resolveProtector(opts);
    opened = await openDiskVolumes(source, protector, opts.backend);
    for (const { part, vol } of opened.volumes) {
      for (const d of vol.meta.damagedCopies) warnings.warn(`BitLocker volume ${vol.meta.guid} (partition ${part.index}): FVE metadata copy ${d.copy + 1} unusable (${d.reason}); copy ${vol.meta.usedCopy + 1} used`);
    }
    const container = opts.outFormat ?? containerFor(source.format);
    await discardOutput(paths);
    const output = (hold.output = await createImage(paths.temp, {
      format: container,
      virtualSize: source.virtualSize,
      blockSize: source.blockSize ?? DEFAULT_BLOCK_SIZE,
      mode: PLAINTEXT_CREATE_MODE,
    }));
    hold.ownsTemp = true;
    await copyOutside(source, output, opened.volumes.map((v) => v.part), opts.signal);
    const threads = opts.threads ?? 2;
    ring = new SlotRing(threads * 2, CHUNK);
    let bytes = 0n;
    for (const { part, vol } of opened.volumes) {
      if (vol.meta.cipher.mode === 'xts') {
        const pool = (hold.pool ??= new CryptPool({ threads, backend: opts.backend }));
        bytes += await decryptVolumeXts(source, output, part, vol, pool, ring, opts.signal);
      } else bytes += await decryptVolumeHere(source, output, part, vol, opts.signal);
    }
    ring.wipe();
    await output.flush();
    await hold.closeOutput();
    await setOutputMode(paths, await plaintextOutputMode(isRemoteSource(src) ? null : src));
    await commitOutput(paths, opts.force === true);
    hold.ownsTemp = false;
    return {
      source: isRemoteSource(src) ? src : resolve(src),
      destination: paths.dest,
      scheme: opened.layout.scheme,
      container,
      volumes: opened.volumes.map(({ part, vol }) => ({
        partition: part.index,
        offset: part.offset,
        size: vol.size,
        guid: vol.meta.guid,
        cipher: `${vol.meta.cipher.name}-${vol.meta.cipher.bits}`,
        sectorSize: vol.sectorSize,
        vmkGuid: vol.vmkGuid,
      })),
      bytesDecrypted: bytes,
      seconds: (performance.now() - started) / 1000,
      backend: hold.pool?.ran ? `${hold.pool.ran.backend}/${hold.pool.ran.kernel}` : null,
      warnings: warnings.list,
    };
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    ring?.wipe();
    for (const v of opened?.volumes ?? []) v.vol.dispose();
    if (protector?.kind === 'startup-key' && opts.bekSecret !== undefined) (protector.bek as Uint8Array).fill(0);
    await hold.release(failure, undefined);
  }
}

/** Copy the allocated bytes of the disk that lie outside `skip` (the BitLocker volumes), in chunks. */
async function copyOutside(source: DiskImage, output: WritableImage, skip: readonly Partition[], signal: AbortSignal | undefined): Promise<void> {
  const buf = Buffer.alloc(CHUNK);
  const holes = [...skip].sort((a, b) => (a.offset < b.offset ? -1 : 1));
  for await (const e of source.extents()) {
    if (!e.allocated) continue;
    let at = e.offset;
    const end = e.offset + e.length;
    while (at < end) {
      if (signal?.aborted) throw abortedError(signal);
      const inside = holes.find((p) => at >= p.offset && at < p.offset + p.size);
      if (inside) {
        at = inside.offset + inside.size;
        continue;
      }
      const next = holes.find((p) => p.offset > at);
      let stop = end;
      if (next && next.offset < stop) stop = next.offset;
      if (stop - at > BigInt(CHUNK)) stop = at + BigInt(CHUNK);
      const b = buf.subarray(0, Number(stop - at));
      await source.read(at, b);
      await output.write(at, b);
      at = stop;
    }
  }
}

/** The crypt runs of a volume in chunks of at most CHUNK bytes (whole sectors). */
function* chunksOf(vol: BitlockerVolume): Generator<{ offset: bigint; stored: bigint; length: number }> {
  for (const s of vol.segments) {
    if (s.kind !== 'crypt') continue;
    for (let k = 0n; k < s.length; k += BigInt(CHUNK)) {
      const n = s.length - k < BigInt(CHUNK) ? Number(s.length - k) : CHUNK;
      yield { offset: s.offset + k, stored: s.stored + k, length: n };
    }
  }
}

async function decryptVolumeXts(
  source: DiskImage,
  output: WritableImage,
  part: Partition,
  vol: BitlockerVolume,
  pool: CryptPool,
  ring: SlotRing,
  signal: AbortSignal | undefined,
): Promise<bigint> {
  const job = pool.startJob(vol.fvek);
  const inflight = new Set<Promise<void>>();
  let failure: unknown = null;
  let bytes = 0n;
  const ss = BigInt(vol.sectorSize);
  try {
    for (const c of chunksOf(vol)) {
      if (failure !== null) break;
      if (signal?.aborted) throw abortedError(signal);
      const slot = await ring.acquire();
      const run = (async () => {
        try {
          const view = slot.view(c.length);
          await source.read(part.offset + c.stored, view);
          await pool.crypt(job, false, { buffer: slot.buffer, offset: slot.offset, length: c.length, firstTweak: c.stored / ss, sectorSize: vol.sectorSize, tweakStep: 1 });
          await output.write(part.offset + c.offset, view);
          bytes += BigInt(c.length);
        } finally {
          ring.release(slot);
        }
      })().catch((e: unknown) => {
        failure ??= e;
      });
      inflight.add(run);
      void run.finally(() => inflight.delete(run));
    }
    await Promise.all(inflight);
    if (failure !== null) throw failure;
  } finally {
    await Promise.allSettled(inflight);
    await pool.endJob(job);
  }
  return bytes;
}

async function decryptVolumeHere(source: DiskImage, output: WritableImage, part: Partition, vol: BitlockerVolume, signal: AbortSignal | undefined): Promise<bigint> {
  const buf = Buffer.alloc(CHUNK);
  let bytes = 0n;
  try {
    for (const c of chunksOf(vol)) {
      if (signal?.aborted) throw abortedError(signal);
      const b = buf.subarray(0, c.length);
      await source.read(part.offset + c.stored, b);
      vol.decryptStored(b, c.stored);
      await output.write(part.offset + c.offset, b);
      bytes += BigInt(c.length);
    }
  } finally {
    buf.fill(0);
  }
  return bytes;
}

/** True when the disk at `src` holds a BitLocker volume (bare, or in an MBR or GPT partition). */
export async function hasBitlocker(src: string, search: { parentDirs?: readonly string[]; allowAbsoluteParents?: boolean } = {}): Promise<boolean> {
  const { source } = await startJob(src, src, search);
  try {
    return (await readDiskLayout(diskBytes(source))).partitions.some((p) => p.bitlocker);
  } catch (e) {
    // A table we cannot read holds no BitLocker volume we could decrypt; the LUKS path reports its own errors.
    if (e instanceof BitlockerError) return false;
    throw e;
  } finally {
    await source.close();
  }
}

export interface BitlockerDescription {
  readonly path: string;
  readonly scheme: DiskLayout['scheme'];
  readonly virtualSize: bigint;
  readonly partitions: readonly (Partition & { readonly volume?: Record<string, unknown>; readonly error?: { code: string; message: string } })[];
}

/** What `vhdcrypt info` shows of a disk with BitLocker volumes: its partitions and, per volume, bitlkDump's facts. */
export async function describeBitlockerDisk(src: string, search: { parentDirs?: readonly string[]; allowAbsoluteParents?: boolean } = {}): Promise<BitlockerDescription> {
  const { source } = await startJob(src, src, search);
  try {
    const disk = diskBytes(source);
    const layout = await readDiskLayout(disk);
    const partitions = [];
    for (const p of layout.partitions) {
      if (!p.bitlocker) {
        partitions.push(p);
        continue;
      }
      try {
        const m = await readFveMetadata(partitionBytes(disk, p));
        partitions.push({
          ...p,
          volume: {
            guid: m.guid,
            variant: m.variant === 'togo' ? 'BitLocker To Go' : 'BitLocker',
            type: m.typeGuid === GUID_EOW ? 'used space only (encrypt-on-write)' : m.typeGuid === GUID_NORMAL ? 'normal' : m.typeGuid,
            cipher: `${m.cipher.name}-${m.cipher.bits}`,
            sectorSize: m.sectorSize,
            state: m.currentState === 4 && m.nextState === 4 ? 'encrypted' : `state ${m.currentState}, next ${m.nextState}`,
            description: m.description,
            created: m.creationTime?.toISOString() ?? null,
            volumeSize: m.volumeSize,
            metadataOffsets: m.metadataOffsets,
            metadataCopyUsed: m.usedCopy + 1,
            damagedCopies: m.damagedCopies.map((d) => ({ copy: d.copy + 1, reason: d.reason })),
            volumeHeader: { offset: m.volumeHeaderOffset, size: m.volumeHeaderSize },
            protectors: m.vmks.map((v) => ({ guid: v.guid, protection: v.protectionName, ...(v.name ? { name: v.name } : {}) })),
          },
        });
      } catch (e) {
        if (!(e instanceof BitlockerError)) throw e;
        partitions.push({ ...p, error: { code: e.code, message: e.message } });
      }
    }
    return { path: source.path, scheme: layout.scheme, virtualSize: source.virtualSize, partitions };
  } finally {
    await source.close();
  }
}

export interface BitlockerToLuksOptions extends BitlockerDecryptOptions {
  /** Vault that seals the new LUKS key (default: the embedded vault); also where a BEK secret is read from. */
  readonly vault?: string;
  /** KEK of the new key (default 'vhdcrypt-kek'). */
  readonly kek?: string;
}

export interface BitlockerToLuksResult {
  readonly bitlocker: BitlockerDecryptResult;
  readonly luks: RunResult;
}

/**
 * The migration off BitLocker / Azure Disk Encryption in one command: the disk decrypted (as decryptBitlockerImage)
 * into a private temp file beside the destination, then encrypted into LUKS2 with a new key sealed in the vault (as
 * encryptImage), the temp file removed whatever happens. The plaintext never leaves the destination's directory
 * and is 0600 while it exists.
 */
export async function bitlockerToLuks(src: string, dst: string, opts: BitlockerToLuksOptions = {}): Promise<BitlockerToLuksResult> {
  const paths = outputPaths(dst);
  const plain = join(dirname(paths.dest), `.${basename(paths.dest)}.vhdcrypt-bitlk-plain`);
  await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
  try {
    const bitlocker = await decryptBitlockerImage(src, plain, { ...opts, force: true });
    const luks = await encryptImage(plain, dst, {
      ...(opts.vault !== undefined ? { vault: opts.vault } : {}),
      ...(opts.vaultCredentials !== undefined ? { vaultCredentials: opts.vaultCredentials } : {}),
      ...(opts.kek !== undefined ? { kek: opts.kek } : {}),
      ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
      ...(opts.backend !== undefined ? { backend: opts.backend } : {}),
      ...(opts.outFormat !== undefined ? { outFormat: opts.outFormat } : {}),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
      ...(opts.onWarning !== undefined ? { onWarning: opts.onWarning } : {}),
      force: opts.force === true,
    });
    return { bitlocker, luks };
  } finally {
    await rm(plain, { force: true });
  }
}
