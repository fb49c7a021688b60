/**
 * mergeImage: coalesce an encrypted differencing link into its parent on ciphertext only. Every link of an
 * encrypted chain is under one volume key and the XTS tweak of a sector depends only on its offset, so the
 * child's ciphertext sectors are exactly what encrypting the merged plaintext gives there: they are copied into
 * the parent at the same virtual offsets (VHD spec "Implementing a Differencing Hard Disk": sectors whose bit is
 * set), with no key, no vault and no decryption. The merged parent's payload is byte-identical to encrypting the
 * merged plaintext.
 *
 * Crash safety. A journal `.CHILD.vhdcrypt-merge` beside the child is written (fsync, rename) before the parent
 * is touched and names both links and the step reached. Step 1 copies the child's sectors into the parent: each
 * copy is idempotent (the same bytes to the same place; a new parent block is allocated footer first, then bitmap
 * and data, then its BAT entry, see sparse-vhd-image.ts), and while it runs the child still covers every sector
 * it copies, so the chain reads correctly throughout. Once the parent is fsynced the journal says so (step 2);
 * then the child and its manifest are removed, then the parent's manifest is replaced, then the journal goes. A
 * merge killed at any point and run again repeats step 1 from the start (while the child exists) or finishes the
 * later steps (once the journal says the copy is durable and the child is gone), and ends in the same image.
 *
 * Manifests: the parent's manifest MAC needs the volume key (chain-manifest.ts), which a merge on ciphertext does
 * not have. With the key (`seal`, or a vault, passphrase or key file given), both links are first verified
 * against their manifests (a damaged link is refused, so a merge never blesses tampering) and the parent gets a
 * new sealed manifest. Without it the parent's manifest, stale once merged, is removed, and the result says so:
 * verify --blocks then reports the parent as having no manifest until a keyed merge or encrypt writes one.
 * Another child of the same parent sees the merged sectors too (as with qemu-img commit): merge a parent only
 * into the chain that will keep it.
 */
import { readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { openImage, parentSearch, SparseVhdImage, bitmapTest, type ParentSearchOptions, type WritableImage } from '../../image/index.js';
import { publishNewFile, syncDir } from '../../new-file.js';
import { readLuksInfo, unlockImage, type UnlockImageOptions } from '../../volume/index.js';
import { EngineError, mapWriteError } from '../errors.js';
import { runWarnings, type Progress } from '../run-options.js';
import { manifestPath, verifyImage, writeManifest } from './chain-manifest.js';

export interface MergeOptions extends ParentSearchOptions, Omit<UnlockImageOptions, 'signal'> {
  /** Verify both links first and seal the parent's new manifest (needs the key: the vault secret by default). */
  readonly seal?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: Progress) => void;
  readonly onWarning?: (message: string) => void;
}

export interface MergeResult {
  readonly child: string;
  /** The parent, which now holds the merged link. */
  readonly parent: string;
  readonly blocks: number;
  readonly bytesCopied: bigint;
  /** True when an interrupted merge was finished. */
  readonly resumed: boolean;
  /** 'sealed': the parent has a new manifest; 'removed': its stale manifest was removed (no key). */
  readonly manifest: 'sealed' | 'removed';
  readonly seconds: number;
  readonly warnings: readonly string[];
}

interface MergeJournal {
  readonly version: 1;
  readonly operation: 'merge';
  readonly child: string;
  readonly parent: string;
  readonly childUuid: string;
  readonly parentUuid: string;
  readonly state: 'copying' | 'copied';
}

export function mergeJournalPath(child: string): string {
  const abs = resolve(child);
  return join(dirname(abs), `.${basename(abs)}.vhdcrypt-merge`);
}

async function readMergeJournal(p: string): Promise<MergeJournal | null> {
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let j: MergeJournal;
  try {
    j = JSON.parse(text) as MergeJournal;
  } catch (e) {
    throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${p}: merge journal is not valid JSON`, { cause: e });
  }
  if (j === null || typeof j !== 'object' || j.version !== 1 || j.operation !== 'merge' || typeof j.child !== 'string' || typeof j.parent !== 'string' || (j.state !== 'copying' && j.state !== 'copied')) {
    throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${p}: not a merge journal`);
  }
  return j;
}

async function writeMergeJournal(p: string, j: MergeJournal): Promise<void> {
  await publishNewFile(p, Buffer.from(JSON.stringify(j) + '\n', 'utf8'), { replace: true });
}

function keyGiven(opts: MergeOptions): boolean {
  return opts.seal === true || opts.vault !== undefined || opts.passphraseFile !== undefined || opts.keyFile !== undefined || opts.passphrase !== undefined;
}

/** Merge the encrypted differencing link `child` into its parent (see the module header). */
export async function mergeImage(child: string, opts: MergeOptions = {}): Promise<MergeResult> {
  const started = performance.now();
  const warnings = runWarnings(opts);
  const journalPath = mergeJournalPath(child);
  const childAbs = resolve(child);
  let journal = await readMergeJournal(journalPath);
  if (journal && journal.child !== childAbs) throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${journalPath} belongs to a merge of ${journal.child}`);
  let blocks = 0;
  let bytes = 0n;
  const resumed = journal !== null;
  let parentPath: string;
  const childExists = await stat(childAbs).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    },
  );
  if (!childExists && journal?.state === 'copied') {
    // Killed after the copy was durable and the child removed: only the last steps are left.
    parentPath = journal.parent;
  } else {
    const chain = await openImage(childAbs, { format: 'vhd', ...parentSearch(opts) });
    let parentUuid: string;
    let childUuid: string;
    try {
      if (chain.format !== 'vhd-differencing' || !chain.parent) throw new EngineError('ENGINE_DELTA_MISMATCH', `${child}: only a differencing link merges into a parent; this is a ${chain.format} image`);
      if (!(await readLuksInfo(chain))) throw new EngineError('ENGINE_NOT_ENCRYPTED', `${child}: the chain holds no LUKS volume`);
      parentPath = resolve(chain.parent.path);
      parentUuid = chain.parent.uuid ?? '';
      childUuid = chain.uuid ?? '';
    } finally {
      await chain.close();
    }
    if (journal && (journal.parent !== parentPath || journal.parentUuid !== parentUuid || journal.childUuid !== childUuid)) {
      throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${journalPath} names another parent or links; remove it only if no merge of ${child} was interrupted`);
    }
    if (keyGiven(opts) && !resumed) {
      // Never seal what was tampered with: both links must match their manifests first.
      const r = await verifyImage(childAbs, { ...opts, blocks: true });
      const bad = [...r.problems, ...r.links.slice(0, 2).flatMap((l) => l.problems.map((p) => `${l.path}: ${p}`))];
      if (bad.length > 0) throw new EngineError('ENGINE_VERIFY_FAILED', `${child}: not merged, the chain does not verify: ${bad.slice(0, 5).join('; ')}`);
    }
    journal = { version: 1, operation: 'merge', child: childAbs, parent: parentPath, childUuid, parentUuid, state: 'copying' };
    await writeMergeJournal(journalPath, journal);
    ({ blocks, bytes } = await copyIntoParent(childAbs, parentPath, opts));
    journal = { ...journal, state: 'copied' };
    await writeMergeJournal(journalPath, journal);
    await rm(childAbs);
    await syncDir(dirname(childAbs));
  }
  await rm(manifestPath(childAbs), { force: true });
  let manifest: 'sealed' | 'removed';
  if (keyGiven(opts)) {
    const parent = await openImage(parentPath, { format: 'vhd', ...parentSearch(opts) });
    try {
      const u = await unlockImage(parent, opts);
      try {
        await writeManifest(parentPath, u.volumeKey, { luksUuid: u.info?.uuid ?? '', dataOffset: u.layout.dataOffset, sectorSize: u.layout.sectorSize });
      } finally {
        u.volumeKey.fill(0);
      }
    } finally {
      await parent.close();
    }
    manifest = 'sealed';
  } else {
    await rm(manifestPath(parentPath), { force: true });
    manifest = 'removed';
    warnings.warn(`${parentPath}: its manifest was removed (merged without the key, it could not be sealed again); merge with --seal or the key to keep one`);
  }
  await rm(journalPath, { force: true });
  return { child: childAbs, parent: parentPath, blocks, bytesCopied: bytes, resumed, manifest, seconds: (performance.now() - started) / 1000, warnings: warnings.list };
}

/** Step 1: every sector the child holds, copied into the parent at the same offset; then the parent is fsynced. */
async function copyIntoParent(childPath: string, parentPath: string, opts: MergeOptions): Promise<{ blocks: number; bytes: bigint }> {
  const child = await openImage(childPath, { format: 'vhd', withoutParent: true });
  let parent: WritableImage | null = null;
  try {
    if (!(child instanceof SparseVhdImage)) throw new EngineError('ENGINE_DELTA_MISMATCH', `${childPath}: not a differencing VHD`);
    parent = await openImage(parentPath, { format: 'vhd', writable: true, ...parentSearch(opts) });
    if (parent.virtualSize !== child.virtualSize) {
      throw new EngineError('ENGINE_DELTA_MISMATCH', `${childPath}: its ${child.virtualSize}-byte disk does not match its parent's ${parent.virtualSize} bytes`);
    }
    // A parent block allocated by the copy must be valid ciphertext throughout: whole child blocks fill whole parent blocks.
    if (parent.format !== 'vhd-fixed' && parent.blockSize !== child.blockSize) {
      throw new EngineError('ENGINE_DELTA_MISMATCH', `${childPath}: ${child.blockSize}-byte blocks cannot merge into a parent of ${parent.blockSize}-byte blocks`);
    }
    const bs = child.blockSize!;
    const perBlock = bs / 512;
    let total = 0n;
    const held: number[] = [];
    for (let b = 0; b < child.blockCount; b++) if (child.ownBlockSector(b) !== null) held.push(b);
    total = BigInt(held.length) * BigInt(bs);
    let done = 0n;
    let bytes = 0n;
    const buf = new Uint8Array(bs);
    for (const b of held) {
      if (opts.signal?.aborted) throw new EngineError('ENGINE_ABORTED', 'interrupted', { cause: opts.signal.reason });
      const map = (await child.ownBitmap(b))!;
      await child.readOwnData(b, 0, buf);
      const sectors = Math.min(perBlock, (Number(child.virtualSize) - b * bs) / 512);
      for (let s = 0; s < sectors; ) {
        if (!bitmapTest(map, s)) {
          s++;
          continue;
        }
        let e = s + 1;
        while (e < sectors && bitmapTest(map, e)) e++;
        try {
          await parent.write(BigInt(b * bs + s * 512), buf.subarray(s * 512, e * 512));
        } catch (err) {
          throw mapWriteError(err, parentPath);
        }
        bytes += BigInt((e - s) * 512);
        s = e;
      }
      done += BigInt(bs);
      opts.onProgress?.({ bytesDone: done, bytesTotal: total, rate: 0 });
    }
    await parent.flush();
    return { blocks: held.length, bytes };
  } finally {
    await Promise.allSettled([child.close(), parent?.close()]);
  }
}
