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
import { open, readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  bitmapTest,
  encodeAbsoluteLocator,
  encodeDynamicHeader,
  encodeRelativeLocator,
  EMPTY_LOCATOR,
  encodeVhdFooter,
  openImage,
  parentSearch,
  PlatformCode,
  SparseVhdImage,
  VhdDiskType,
  vhdTimestamp,
  type DiskImage,
  type DynamicHeader,
  type ParentSearchOptions,
  type WritableImage,
} from '../../image/index.js';
import { publishNewFile, syncDir } from '../../new-file.js';
import { readLuksInfo, unlockImage, type UnlockImageOptions } from '../../volume/index.js';
import { EngineError, mapWriteError } from '../errors.js';
import { runWarnings, type Progress } from '../run-options.js';
import { manifestPath, sealedSourceUuid, verifyImage, writeManifest } from './chain-manifest.js';

export interface MergeOptions extends ParentSearchOptions, Omit<UnlockImageOptions, 'signal'> {
  /** Verify both links first and seal the parent's new manifest (needs the key: the vault secret by default). */
  readonly seal?: boolean;
  /** Merge the parent into the child instead: the child takes the parent's place (backup retention rolling forward). */
  readonly intoChild?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: Progress) => void;
  readonly onWarning?: (message: string) => void;
  /**
   * Tests only (the kill -9 tests hold the process here and kill it): called synchronously at each step boundary
   * after the copy, with the step just finished. Nothing else uses it; it carries no data.
   */
  readonly onStep?: (step: MergeStep) => void;
}

/** The step boundaries after the copy at which onStep is called, in order (see the module header). */
export type MergeStep = 'copy-flushed' | 'journal-copied' | 'end-footer' | 'footer-0' | 'locators' | 'header' | 'removed' | 'manifest' | 'old-manifest-removed';

export interface MergeResult {
  readonly child: string;
  readonly parent: string;
  /** The link that now holds the merge (the parent; with intoChild, the child) and the one removed. */
  readonly merged: string;
  readonly removed: string;
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
  /** intoChild: the child's new footer and dynamic header (base64), written once the copy is durable. */
  readonly intoChild?: { readonly footer: string; readonly header: string; readonly headerOffset: number; readonly locators: ReadonlyArray<readonly [number, string]> };
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
  if (opts.intoChild === true) return mergeIntoChild(child, opts);
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
    opts.onStep?.('copy-flushed');
    journal = { ...journal, state: 'copied' };
    await writeMergeJournal(journalPath, journal);
    opts.onStep?.('journal-copied');
    await rm(childAbs);
    await syncDir(dirname(childAbs));
    opts.onStep?.('removed');
  }
  let manifest: 'sealed' | 'removed';
  if (keyGiven(opts)) {
    const parent = await openImage(parentPath, { format: 'vhd', ...parentSearch(opts) });
    try {
      const u = await unlockImage(parent, opts);
      try {
        const luksUuid = u.info?.uuid ?? '';
        // The parent now encrypts what the child did: the plaintext disk the child's manifest names. A rerun killed
        // after that manifest was removed finds it in the parent's, sealed from it just before.
        const source = (await sealedSourceUuid(childAbs, u.volumeKey, luksUuid)) ?? (resumed && !childExists ? await sealedSourceUuid(parentPath, u.volumeKey, luksUuid) : null);
        await writeManifest(parentPath, u.volumeKey, { luksUuid, dataOffset: u.layout.dataOffset, sectorSize: u.layout.sectorSize }, source);
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
  opts.onStep?.('manifest');
  await rm(manifestPath(childAbs), { force: true });
  opts.onStep?.('old-manifest-removed');
  await rm(journalPath, { force: true });
  return { child: childAbs, parent: parentPath, merged: parentPath, removed: childAbs, blocks, bytesCopied: bytes, resumed, manifest, seconds: (performance.now() - started) / 1000, warnings: warnings.list };
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

/**
 * intoChild: the parent's sectors the child does not hold are copied into the child, then the child is pointed at
 * the parent's own parent (its UUID, time stamp, name and W2ru/W2ku locators, written in the locator space the child
 * has), or, when the parent is the base, becomes a dynamic disk; then the parent is removed. The copy keeps the chain
 * reading correctly (the child gets exactly the bytes the parent showed there); the new footer and header are
 * computed before anything is written and kept in the journal, so a rerun after a kill writes the same bytes again.
 */
async function mergeIntoChild(child: string, opts: MergeOptions): Promise<MergeResult> {
  const started = performance.now();
  const warnings = runWarnings(opts);
  const journalPath = mergeJournalPath(child);
  const childAbs = resolve(child);
  let journal = await readMergeJournal(journalPath);
  if (journal && (journal.child !== childAbs || !journal.intoChild)) throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${journalPath} belongs to another merge`);
  const resumed = journal !== null;
  let blocks = 0;
  let bytes = 0n;
  if (journal?.state !== 'copied') {
    const chain = await openImage(childAbs, { format: 'vhd', ...parentSearch(opts) });
    let plan: NonNullable<MergeJournal['intoChild']>;
    let parentPath: string;
    let parentUuid: string;
    let childUuid: string;
    try {
      const parent = chain.parent;
      if (chain.format !== 'vhd-differencing' || !parent) throw new EngineError('ENGINE_DELTA_MISMATCH', `${child}: only a differencing link has a parent to merge`);
      if (parent.format === 'vhd-fixed' || parent.format === 'raw') {
        throw new EngineError('ENGINE_DELTA_MISMATCH', `${child}: a fixed base cannot merge into a child (the child would hold every block); merge the child into it instead`);
      }
      if (parent.blockSize !== chain.blockSize) throw new EngineError('ENGINE_DELTA_MISMATCH', `${child}: its blocks and its parent's differ in size`);
      if (!(await readLuksInfo(chain))) throw new EngineError('ENGINE_NOT_ENCRYPTED', `${child}: the chain holds no LUKS volume`);
      parentPath = resolve(parent.path);
      parentUuid = parent.uuid ?? '';
      childUuid = chain.uuid ?? '';
      plan = await newChildMetadata(chain, parent.parent ?? null);
    } finally {
      await chain.close();
    }
    if (journal && (journal.parent !== parentPath || journal.parentUuid !== parentUuid || journal.childUuid !== childUuid)) {
      throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${journalPath} names another parent or links`);
    }
    if (keyGiven(opts) && !resumed) {
      const r = await verifyImage(childAbs, { ...opts, blocks: true });
      const bad = [...r.problems, ...r.links.slice(0, 2).flatMap((l) => l.problems.map((p) => `${l.path}: ${p}`))];
      if (bad.length > 0) throw new EngineError('ENGINE_VERIFY_FAILED', `${child}: not merged, the chain does not verify: ${bad.slice(0, 5).join('; ')}`);
    }
    // A rerun recomputes nothing of the plan: the journal's, once written, is the one applied.
    if (journal?.intoChild) plan = journal.intoChild;
    journal = { version: 1, operation: 'merge', child: childAbs, parent: parentPath, childUuid, parentUuid, state: 'copying', intoChild: plan };
    await writeMergeJournal(journalPath, journal);
    ({ blocks, bytes } = await copyParentIntoChild(childAbs, parentPath, opts));
    opts.onStep?.('copy-flushed');
    journal = { ...journal, state: 'copied' };
    await writeMergeJournal(journalPath, journal);
    opts.onStep?.('journal-copied');
  }
  const plan = journal.intoChild!;
  // The new metadata, in place, in an order that keeps the child readable after each write: first the end footer
  // and its copy at 0 (over a base the child becomes dynamic, and a dynamic disk ignores its header's parent
  // fields; over a grandparent the footer is unchanged), then the locator payloads, then the header naming them.
  // The header first would leave a differencing disk naming no parent until the footer was written.
  const fh = await open(childAbs, 'r+');
  try {
    const footer = Buffer.from(plan.footer, 'base64');
    const size = (await fh.stat()).size;
    await fh.write(footer, 0, undefined, size - 512);
    opts.onStep?.('end-footer');
    await fh.write(footer, 0, undefined, 0);
    opts.onStep?.('footer-0');
    for (const [at, b64] of plan.locators) await fh.write(Buffer.from(b64, 'base64'), 0, undefined, at);
    opts.onStep?.('locators');
    await fh.write(Buffer.from(plan.header, 'base64'), 0, undefined, plan.headerOffset);
    await fh.datasync();
    opts.onStep?.('header');
  } finally {
    await fh.close();
  }
  await rm(journal.parent, { force: true });
  await rm(manifestPath(journal.parent), { force: true });
  await syncDir(dirname(journal.parent));
  opts.onStep?.('removed');
  let manifest: 'sealed' | 'removed';
  if (keyGiven(opts)) {
    const img = await openImage(childAbs, { format: 'vhd', ...parentSearch(opts) });
    try {
      const u = await unlockImage(img, opts);
      try {
        const luksUuid = u.info?.uuid ?? '';
        const source = await sealedSourceUuid(childAbs, u.volumeKey, luksUuid);
        await writeManifest(childAbs, u.volumeKey, { luksUuid, dataOffset: u.layout.dataOffset, sectorSize: u.layout.sectorSize }, source);
      } finally {
        u.volumeKey.fill(0);
      }
    } finally {
      await img.close();
    }
    manifest = 'sealed';
  } else {
    await rm(manifestPath(childAbs), { force: true });
    manifest = 'removed';
    warnings.warn(`${childAbs}: its manifest was removed (merged without the key, it could not be sealed again); merge with --seal or the key to keep one`);
  }
  opts.onStep?.('manifest');
  await rm(journalPath, { force: true });
  return { child: childAbs, parent: journal.parent, merged: childAbs, removed: journal.parent, blocks, bytesCopied: bytes, resumed, manifest, seconds: (performance.now() - started) / 1000, warnings: warnings.list };
}

/** The child's footer and header once it stands on `grand` (or alone, a dynamic disk, when `grand` is null). */
async function newChildMetadata(child: DiskImage, grand: DiskImage | null): Promise<NonNullable<MergeJournal['intoChild']>> {
  const footer = child.footer!;
  const header = child.dynamicHeader!;
  const locators: Array<readonly [number, string]> = [];
  let newHeader: DynamicHeader;
  let diskType = footer.diskType;
  if (grand) {
    const payloads = new Map<number, Uint8Array>([
      [PlatformCode.W2ru, encodeRelativeLocator(child.path, grand.path)],
      [PlatformCode.W2ku, encodeAbsoluteLocator(grand.path)],
    ]);
    const entries = header.parentLocators.map((l) => {
      const bytes = payloads.get(l.platformCode);
      if (!bytes) return l.platformCode === PlatformCode.none ? l : EMPTY_LOCATOR;
      // The space a locator has, whatever unit its writer used for platformDataSpace: at least its sectors.
      const space = Math.max(l.platformDataSpace * 512, Math.ceil(l.platformDataLength / 512) * 512);
      if (bytes.length > space) throw new EngineError('ENGINE_DELTA_MISMATCH', `${child.path}: the path of ${grand.path} does not fit the child's parent locator space`);
      // Zeros after the new path, up to the old one's end, so no byte of the old path is left behind.
      const out = new Uint8Array(Math.max(bytes.length, l.platformDataLength));
      out.set(bytes);
      locators.push([Number(l.platformDataOffset), Buffer.from(out).toString('base64')]);
      return { ...l, platformDataLength: bytes.length };
    });
    const st = await stat(grand.path);
    newHeader = { ...header, parentUniqueId: grand.uuid ?? '', parentTimestamp: vhdTimestamp(st.mtime), parentUnicodeName: basename(grand.path), parentLocators: entries };
  } else {
    diskType = VhdDiskType.dynamic;
    newHeader = { ...header, parentUniqueId: '00000000-0000-0000-0000-000000000000', parentTimestamp: 0, parentUnicodeName: '', parentLocators: header.parentLocators.map(() => EMPTY_LOCATOR) };
  }
  return {
    footer: Buffer.from(encodeVhdFooter({ ...footer, diskType })).toString('base64'),
    header: Buffer.from(encodeDynamicHeader(newHeader)).toString('base64'),
    headerOffset: Number(footer.dataOffset),
    locators,
  };
}

/** The parent's own sectors the child does not hold, copied into the child; then the child is fsynced. */
async function copyParentIntoChild(childPath: string, parentPath: string, opts: MergeOptions): Promise<{ blocks: number; bytes: bigint }> {
  const parent = await openImage(parentPath, { format: 'vhd', withoutParent: true });
  const childAlone = await openImage(childPath, { format: 'vhd', withoutParent: true });
  let child: WritableImage | null = null;
  try {
    if (!(parent instanceof SparseVhdImage) || !(childAlone instanceof SparseVhdImage)) throw new EngineError('ENGINE_DELTA_MISMATCH', `${childPath}: both links must be dynamic or differencing VHDs`);
    child = await openImage(childPath, { format: 'vhd', writable: true, withoutParent: true });
    const bs = parent.blockSize!;
    const perBlock = bs / 512;
    const held: number[] = [];
    for (let b = 0; b < parent.blockCount; b++) if (parent.ownBlockSector(b) !== null) held.push(b);
    const total = BigInt(held.length) * BigInt(bs);
    let done = 0n;
    let bytes = 0n;
    const buf = new Uint8Array(bs);
    const dynamicParent = parent.format === 'vhd-dynamic';
    for (const b of held) {
      if (opts.signal?.aborted) throw new EngineError('ENGINE_ABORTED', 'interrupted', { cause: opts.signal.reason });
      // A dynamic parent's allocated block is present whole (its data is authoritative, whatever its bitmap).
      const pmap = dynamicParent ? null : (await parent.ownBitmap(b))!;
      const cmap = await childAlone.ownBitmap(b);
      await parent.readOwnData(b, 0, buf);
      const sectors = Math.min(perBlock, (Number(parent.virtualSize) - b * bs) / 512);
      const want = (s: number) => (pmap === null || bitmapTest(pmap, s)) && (cmap === null || !bitmapTest(cmap, s));
      for (let s = 0; s < sectors; ) {
        if (!want(s)) {
          s++;
          continue;
        }
        let e = s + 1;
        while (e < sectors && want(e)) e++;
        try {
          await child.write(BigInt(b * bs + s * 512), buf.subarray(s * 512, e * 512));
        } catch (err) {
          throw mapWriteError(err, childPath);
        }
        bytes += BigInt((e - s) * 512);
        s = e;
      }
      done += BigInt(bs);
      opts.onProgress?.({ bytesDone: done, bytesTotal: total, rate: 0 });
    }
    await child.flush();
    return { blocks: held.length, bytes };
  } finally {
    await Promise.allSettled([parent.close(), childAlone.close(), child?.close()]);
  }
}
