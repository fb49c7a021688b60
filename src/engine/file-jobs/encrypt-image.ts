/**
 * encryptImage: a VHD or raw image into an encrypted image whose virtual disk
 * is a LUKS volume (or a plain dm-crypt volume) holding the source disk sector
 * for sector, written safely (temp file, fsync, rename) and resumably.
 */
import { rm, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import { isVhdcryptError } from '../../errors.js';
import { createImage, DEFAULT_BLOCK_SIZE, sectorBitmapSize, type WritableImage } from '../../image/index.js';
import type { KdfOptions } from '../../luks/index.js';
import type { WrapAlgorithm } from '../../vault/index.js';
import { runCryptJob, runResultOf, startOutputWrites } from './crypt-job.js';
import { batchBytesForJob, poolForJob, type CryptPool } from '../pool/crypt-pool.js';
import { startJob } from './job-hold.js';
import { EngineError } from '../errors.js';
import { isRemoteSource, sourceIdentity } from './source-image.js';
import { checkJournalMatches, journalDiffs, writeJournal, type JournalState } from './resume-journal.js';
import { checkDestination, checkFreeSpace, commitOutput, discardOutput, exists, findLeftover, markSealing } from './safe-output.js';
import { checkRunOptions, type RunOptions, type RunResult } from '../run-options.js';
import {
  checkNewVolumeOptions,
  chooseDataOffset,
  chooseSectorSize,
  hasLuksMagic,
  discardSecret,
  openVolumeVault,
  prepareEncryption,
  unlockImage,
  writeNewLuksRegion,
  type EncryptionFormat,
  type KeySourceOptions,
  type Pkcs11Enrollment,
  type PreparedEncryption,
  type VolumeVault,
} from '../../volume/index.js';
import { newManifestKeys, wipeManifestKeys, writeManifest, writtenRegionTags, type ManifestKeys } from './chain-manifest.js';
import { encryptDelta, type DeltaEncryptOptions } from './delta-encrypt.js';
import { containerFor, estimateOutputBytes, openOutput } from './output-image.js';

export interface EncryptOptions extends RunOptions, KeySourceOptions {
  /** 'luks2' (default), 'luks1' (QEMU, nbdkit) or 'plain'. */
  readonly format?: EncryptionFormat;
  /** KEK name in the vault (default 'vhdcrypt-kek'). */
  readonly kek?: string;
  /** Wrap algorithm with an RSA KEK: RSA-OAEP-256 (default) or RSA-OAEP (Azure Disk Encryption's). */
  readonly kekAlg?: WrapAlgorithm;
  /** Seal the passphrase as an Azure Disk Encryption secret ('Wrapped BEK', ADE's tags) for this machine name. */
  readonly ade?: { readonly machineName: string };
  /** AES-XTS key size in bits: 512 (AES-256, default) or 256 (AES-128). */
  readonly keySize?: 256 | 512;
  /** Crypto sector size; LUKS1 and plain default 512, LUKS2 4096 when the disk size allows. */
  readonly sectorSize?: 512 | 4096;
  /** Write every block, unallocated ones as encrypted zeros (what QEMU's luks-over-vpc needs). */
  readonly noSparse?: boolean;
  /** A second keyslot for a passphrase a person types (argon2id). */
  readonly addRecoveryPassphrase?: string | Uint8Array;
  /** KDF of keyslots for the caller's passphrase/key file, and of the recovery keyslot. */
  readonly kdf?: KdfOptions;
  readonly recoveryKdf?: KdfOptions;
  /** LUKS payload offset in bytes (default 2 MiB LUKS1, 16 MiB LUKS2, rounded up to whole VHD blocks). */
  readonly dataOffset?: bigint;
  /** LUKS2: also a keyslot and systemd-pkcs11 token that systemd-cryptsetup opens with the PKCS#11 token. */
  readonly enrollPkcs11?: Pkcs11Enrollment;
  /**
   * The source is a differencing VHD and this is the encrypted image of its parent: the output is an encrypted
   * differencing VHD over it, under the parent's volume key (see delta-encrypt.ts).
   */
  readonly parentImage?: string;
  /** Write the authenticated manifest beside a VHD output (default true: a fixed output is hashed as its batches are written, a dynamic one read back once). */
  readonly manifest?: boolean;
}

/** Encrypt the image at `src` into a new image at `dst`. */
export async function encryptImage(src: string, dst: string, opts: EncryptOptions = {}): Promise<RunResult> {
  if (opts.parentImage !== undefined) return encryptDelta(src, dst, deltaOptions(opts));
  checkNewVolumeOptions(opts);
  const checkedBatchBytes = checkRunOptions(opts);
  const started = performance.now();
  const { paths, source, warnings, hold } = await startJob(src, dst, opts);
  const batchBytes = batchBytesForJob(opts.batchBytes === undefined ? undefined : checkedBatchBytes, checkedBatchBytes, source.virtualSize);
  // hold.ownsTemp is set once this run owns the temp file: only then does a failure remove it (never a leftover it
  // refused to touch). Once the journal exists, an interrupt keeps the temp file, journal and secret for --resume.
  let prepared: PreparedEncryption | null = null;
  // A secret sealed by this run for an output that then failed is deleted again (soft delete).
  let sealedNow: { secretId: string; vaultUri: string } | null = null;
  // The output's manifest keys, made before the run so the workers tag what they write; wiped at the end.
  let manifestKeys: ManifestKeys | null = null;
  // The output's direct writes and reserved blocks, started as soon as it exists (crypt-job.ts startOutputWrites).
  let outputWrites: Promise<boolean> | undefined;
  let failure: unknown;
  try {
    await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
    // Workers load their backend while the keys are made or unlocked; a small job runs inline (poolForJob). Started
    // once the output's reservation is under way: constructing the pool takes this thread ~20 ms.
    const startPool = () => {
      const p = (hold.pool = poolForJob({ threads: opts.threads, backend: opts.backend }, source.virtualSize));
      void p.warm();
      return p;
    };
    let pool: CryptPool;
    const format = opts.format ?? 'luks2';
    const container = opts.outFormat ?? containerFor(source.format);
    const keyBits = opts.keySize ?? 512;
    const sectorSize = chooseSectorSize(format, opts.sectorSize, source.virtualSize);
    const blockSize = source.blockSize ?? DEFAULT_BLOCK_SIZE;
    const dataOffset = chooseDataOffset(format, opts.dataOffset, blockSize);
    const diskSize = dataOffset + source.virtualSize;
    const sparse = container === 'vhd-dynamic' && opts.noSparse !== true;
    const keySource = opts.keyFile !== undefined ? 'key-file' : opts.passphraseFile !== undefined || opts.passphrase !== undefined ? 'passphrase' : 'vault';
    const journalBase: Omit<JournalState, 'doneBatches' | 'secretId'> = {
      version: 1,
      operation: 'encrypt',
      source: await sourceIdentity(src, source),
      params: { format, container, keyBits, sectorSize, dataOffset: String(dataOffset), blockSize, sparse, keySource },
      batchBytes,
    };

    const selection = { base: 0n, payloadSize: diskSize - dataOffset, granule: BigInt(sparse ? blockSize : sectorSize), all: !sparse };
    let skipBatches = 0;
    let resumed = false;
    let secretId: string | null = null;
    let output: WritableImage;
    let volumeKey: Uint8Array;
    // A fixed output's manifest tags it in DEFAULT_BLOCK_SIZE pieces, a dynamic one's each block over its bitmap and
    // data (chain-manifest.ts), where the tags can be taken as the bytes are written: each batch, by the worker that
    // crypts it, when batches fall on those pieces (a dynamic block this run allocates has every sector present:
    // its bitmap is all ones), and for a fixed output the LUKS header region this run writes into a fresh file.
    // The manifest then reads back only the rest: a resumed run's header and skipped batches, a dynamic output's
    // header blocks.
    const wantManifest = container !== 'raw' && opts.manifest !== false;
    const piece = BigInt(container === 'vhd-dynamic' ? blockSize : DEFAULT_BLOCK_SIZE);
    const bitmapBytes = container === 'vhd-dynamic' ? sectorBitmapSize(blockSize) : 0;
    const tagAsWritten = wantManifest && dataOffset % piece === 0n && BigInt(batchBytes) % piece === 0n;
    const knownTags = new Map<bigint, string>();
    const { resume, journal } = await findLeftover(paths, opts, warnings.warn);
    if (resume) {
      checkJournalMatches(resume, journalBase, paths.journal);
      // A run killed after its first journal write but before settling its secret left it pending.
      if (resume.secretId) await settleSecret(resume.secretId, opts);
      pool = startPool();
      output = hold.output = await openOutput(paths.temp, container);
      const u = await unlockImage(output, { ...opts, secretId: resume.secretId ?? undefined, plain: { sectorSize, keyBits } });
      volumeKey = hold.volumeKey = u.volumeKey;
      if (u.layout.dataOffset !== dataOffset || u.layout.sectorSize !== sectorSize || u.layout.format !== format) {
        throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${paths.temp}: its header does not match the interrupted run; start over with --force`);
      }
      hold.ownsTemp = true;
      prepared = { volumeKey, header: null, layout: u.layout, secretId: u.secretId, kekId: null, vaultUri: u.vaultUri, luksUuid: u.info?.uuid ?? null };
      secretId = resume.secretId ?? u.secretId;
      skipBatches = resume.doneBatches;
      resumed = true;
      hold.journalWritten = true;
    } else {
      // A LUKS volume encrypted again is almost always a mistake (the output of an earlier run given as the input).
      if (await hasLuksMagic(source)) {
        if (!opts.force) throw new EngineError('ENGINE_ALREADY_ENCRYPTED', `${src}: its disk is already a LUKS volume (LUKS magic at offset 0); use --force to encrypt it again`);
        warnings.warn(`${src}: its disk is already a LUKS volume; encrypting it again (--force)`);
      }
      await discardOutput(paths);
      // The vault secret kept for the interrupted run of this same job unlocks only the temp file just removed.
      if (opts.force && journal?.secretId && journal.params.keySource === 'vault' && journalDiffs(journal, journalBase).length === 0) {
        await discardSecret({ secretId: journal.secretId, vaultUri: resolveVaultOf(journal.secretId, opts.vault) }, opts.vaultCredentials);
      }
      await checkFreeSpace(dirname(paths.dest), await estimateOutputBytes(source, container, diskSize, dataOffset, blockSize, !sparse));
      // The output is made and its blocks reserved (fallocate: ~0.1 s per GiB on tmpfs) while the key is sealed; no
      // data sector is written before the header.
      const containerUuid = randomUUID();
      output = hold.output = await createImage(paths.temp, { format: container, virtualSize: diskSize, blockSize, uuid: containerUuid });
      hold.ownsTemp = true;
      outputWrites = startOutputWrites({ input: source, output, selection, outputBase: dataOffset });
      // Awaited by the job, or in `finally` when the run fails before it.
      outputWrites.catch(() => undefined);
      pool = startPool();
      // One vault handle for the pending secrets, the seal and settling it: each open and close of the embedded
      // vault costs its SQLite file a WAL checkpoint, and a remote vault its clients and tokens.
      const vault = keySource === 'vault' ? await openVolumeVault(opts.vault, opts.vaultCredentials, true) : null;
      try {
        if (vault) {
          // A run of this job killed between sealing its key and writing its first journal left a pending secret,
          // and its sealing marker: only then are the vault's secrets searched for it.
          if (await exists(paths.sealing)) await discardPendingSecrets(vault, pendingJobTag(paths.dest));
          await markSealing(paths.sealing);
        }
        prepared = await prepareEncryption(
          { format, keyBits, sectorSize, dataOffset, diskSize, containerUuid, sourceName: basename(src), pendingJob: pendingJobTag(paths.dest) },
          { ...opts, recoveryPassphrase: opts.addRecoveryPassphrase, ...(vault ? { openVault: vault } : {}) },
        );
        volumeKey = hold.volumeKey = prepared.volumeKey;
        secretId = prepared.secretId;
        if (secretId && prepared.vaultUri) sealedNow = { secretId, vaultUri: prepared.vaultUri };
        if (prepared.header) {
          const written = await writeNewLuksRegion(output, prepared.header);
          if (tagAsWritten && container === 'vhd-fixed' && prepared.luksUuid !== null) {
            manifestKeys = newManifestKeys(volumeKey, prepared.luksUuid);
            for (const [at, tag] of writtenRegionTags(manifestKeys, prepared.header, written, DEFAULT_BLOCK_SIZE, Number(dataOffset))) knownTags.set(at, tag);
          }
        } else await output.flush();
        await writeJournal(paths.journal, { ...journalBase, doneBatches: 0, secretId });
        hold.journalWritten = true;
        // The journal now names the secret (--resume finds it): it is no longer pending.
        if (secretId) await (vault ? vault.settle(secretId) : settleSecret(secretId, opts));
        if (vault) await rm(paths.sealing, { force: true });
      } finally {
        await vault?.close();
      }
    }

    const luksUuid = prepared.luksUuid;
    if (tagAsWritten && luksUuid !== null) manifestKeys ??= newManifestKeys(volumeKey, luksUuid);
    const stats = await runCryptJob(
      {
        encrypt: true,
        input: source,
        output,
        layout: prepared.layout,
        selection,
        ...(outputWrites ? { outputWrites } : {}),
        inputBase: 0n,
        outputBase: dataOffset,
        volumeKey,
        journalPath: paths.journal,
        journal: { ...journalBase, secretId },
        skipBatches,
        ...(manifestKeys !== null ? { tagPieces: { pieceBytes: Number(piece), key: manifestKeys.tagKey!, bitmapBytes } } : {}),
      },
      opts,
      pool,
    );
    await hold.closeOutput();
    await commitOutput(paths, opts.force === true);
    hold.ownsTemp = false;
    sealedNow = null;
    // Every encrypted VHD gets its authenticated manifest (chain-manifest.ts): the base of a chain as any link.
    if (wantManifest && luksUuid !== null) {
      for (const [at, tag] of stats.pieceTags) knownTags.set(at, tag);
      const taken = manifestKeys !== null ? { keys: manifestKeys, tags: knownTags } : undefined;
      await writeManifest(paths.dest, volumeKey, { luksUuid, dataOffset, sectorSize }, source.uuid ?? null, taken);
    }
    const outputFileSize = BigInt((await stat(paths.dest)).size);
    return runResultOf(stats, started, {
      operation: 'encrypt',
      source: isRemoteSource(src) ? src : resolve(src),
      destination: paths.dest,
      format,
      container,
      sourceVirtualSize: source.virtualSize,
      outputVirtualSize: diskSize,
      outputFileSize,
      dataOffset,
      sectorSize,
      resumed,
      secretId,
      kekId: prepared.kekId,
      vaultUri: prepared.vaultUri,
      luksUuid: prepared.luksUuid,
      warnings: warnings.list,
    });
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    // The reservation works on the output's descriptor: it ends before the output is closed.
    await outputWrites?.catch(() => undefined);
    if (manifestKeys !== null) wipeManifestKeys(manifestKeys);
    // An interrupted run keeps its temp file, journal and secret (the journal names it): --resume continues.
    const keep = await hold.release(failure, opts.signal);
    if (sealedNow && !keep) await discardSecret(sealedNow, opts.vaultCredentials);
  }
}

/** The pending tag value of the job writing `dest` (an absolute path): the same on every run of it. */
function pendingJobTag(dest: string): string {
  return createHash('sha256').update(`vhdcrypt-encrypt|${dest}`, 'utf8').digest('hex').slice(0, 32);
}

async function settleSecret(secretId: string, opts: EncryptOptions): Promise<void> {
  const vault = await openVolumeVault(resolveVaultOf(secretId, opts.vault), opts.vaultCredentials);
  try {
    await vault.settle(secretId);
  } finally {
    await vault.close();
  }
}

/** The vault a secret id belongs to: its URI prefix (file:<dir>/secrets/...), else the one given. */
function resolveVaultOf(secretId: string, given: string | undefined): string | undefined {
  const i = secretId.indexOf('/secrets/');
  return i > 0 ? secretId.slice(0, i) : given;
}

/**
 * Remove the secrets a killed run of this job left pending. Best effort when the principal may not list (the run
 * then seals a new secret as before); other vault failures stop the run.
 */
async function discardPendingSecrets(vault: VolumeVault, job: string): Promise<void> {
  try {
    await vault.discardPending(job);
  } catch (e) {
    if (!isVhdcryptError(e, 'VAULT_FORBIDDEN')) throw e;
  }
}

/** A delta takes everything about its volume from the encrypted parent: options that would choose it are refused. */
function deltaOptions(opts: EncryptOptions): DeltaEncryptOptions {
  const chosen = (['format', 'keySize', 'sectorSize', 'dataOffset', 'outFormat', 'noSparse', 'addRecoveryPassphrase', 'kek'] as const).filter((k) => opts[k] !== undefined);
  if (chosen.length > 0) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `parentImage: the volume is the parent's (same key, sector size and data offset); ${chosen.join(', ')} cannot be chosen`);
  }
  if (typeof opts.parentImage !== 'string' || opts.parentImage === '') throw new EngineError('ENGINE_BAD_ARGUMENT', 'parentImage expected the path of an encrypted VHD');
  return { ...opts, parentImage: opts.parentImage };
}
