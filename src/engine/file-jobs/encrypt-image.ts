/**
 * encryptImage: a VHD or raw image into an encrypted image whose virtual disk
 * is a LUKS volume (or a plain dm-crypt volume) holding the source disk sector
 * for sector, written safely (temp file, fsync, rename) and resumably.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import { isVhdcryptError } from '../../errors.js';
import { createImage, DEFAULT_BLOCK_SIZE, type WritableImage } from '../../image/index.js';
import type { KdfOptions } from '../../luks/index.js';
import { runCryptJob } from './crypt-job.js';
import { CryptPool } from '../pool/crypt-pool.js';
import { EngineError } from '../errors.js';
import { isRemoteSource, openSource, sourceIdentity } from './source-image.js';
import { checkJournalMatches, journalDiffs, readJournal, writeJournal, type JournalState } from './resume-journal.js';
import { checkDestination, checkFreeSpace, commitOutput, discardOutput, exists, keepForResume, nothingToResume, outputPaths } from './safe-output.js';
import { checkRunOptions, runWarnings, type RunOptions, type RunResult } from '../run-options.js';
import {
  checkNewVolumeOptions,
  chooseDataOffset,
  chooseSectorSize,
  hasLuksMagic,
  discardSecret,
  openVolumeVault,
  prepareEncryption,
  unlockImage,
  writeLuksRegion,
  type EncryptionFormat,
  type KeySourceOptions,
  type PreparedEncryption,
} from '../../volume/index.js';
import { containerFor, estimateOutputBytes, openOutput } from './output-image.js';

export interface EncryptOptions extends RunOptions, KeySourceOptions {
  /** 'luks2' (default), 'luks1' (QEMU, nbdkit) or 'plain'. */
  readonly format?: EncryptionFormat;
  /** KEK name in the vault (default 'vhdcrypt-kek'). */
  readonly kek?: string;
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
}

/** Encrypt the image at `src` into a new image at `dst`. */
export async function encryptImage(src: string, dst: string, opts: EncryptOptions = {}): Promise<RunResult> {
  checkNewVolumeOptions(opts);
  const batchBytes = checkRunOptions(opts);
  const started = performance.now();
  const paths = outputPaths(dst);
  const source = await openSource(src, opts);
  // Damage the image layer worked around (a bad end footer read from its copy at offset 0, ...) is reported.
  const warnings = runWarnings(opts);
  for (const w of source.warnings) warnings.warn(w);
  let output: WritableImage | null = null;
  let prepared: PreparedEncryption | null = null;
  let volumeKey: Uint8Array | null = null;
  // Set once this run owns the temp file: only then does a failure remove it (never a leftover it refused to touch).
  let ownsTemp = false;
  let pool: CryptPool | null = null;
  // A secret sealed by this run for an output that then failed is deleted again (soft delete).
  let sealedNow: { secretId: string; vaultUri: string } | null = null;
  // Once the journal exists, an interrupt keeps the temp file, journal and secret for --resume (keepForResume).
  let journalWritten = false;
  let failure: unknown;
  try {
    await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
    // Workers load their backend while the keys are made or unlocked.
    pool = new CryptPool({ threads: opts.threads, backend: opts.backend });
    void pool.warm();
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

    let skipBatches = 0;
    let resumed = false;
    let secretId: string | null = null;
    const journal = await readJournal(paths.journal);
    const tempExists = await exists(paths.temp);
    if (opts.resume && journal && tempExists) {
      checkJournalMatches(journal, journalBase, paths.journal);
      // A run killed after its first journal write but before settling its secret left it pending.
      if (journal.secretId) await settleSecret(journal.secretId, opts);
      output = await openOutput(paths.temp, container);
      const u = await unlockImage(output, { ...opts, secretId: journal.secretId ?? undefined, plain: { sectorSize, keyBits } });
      volumeKey = u.volumeKey;
      if (u.layout.dataOffset !== dataOffset || u.layout.sectorSize !== sectorSize || u.layout.format !== format) {
        throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${paths.temp}: its header does not match the interrupted run; start over with --force`);
      }
      ownsTemp = true;
      prepared = { volumeKey, header: null, layout: u.layout, secretId: u.secretId, kekId: null, vaultUri: u.vaultUri, luksUuid: u.info?.uuid ?? null };
      secretId = journal.secretId ?? u.secretId;
      skipBatches = journal.doneBatches;
      resumed = true;
      journalWritten = true;
    } else {
      if ((journal || tempExists) && !opts.resume) {
        if (!opts.force) {
          throw new EngineError('ENGINE_TEMP_EXISTS', `an interrupted run left ${tempExists ? paths.temp : paths.journal}; use --resume to finish it or --force to start over`);
        }
      }
      if (opts.resume) warnings.warn(nothingToResume(paths.dest, journal !== null, tempExists));
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
      // A run of this job killed between sealing its key and writing its first journal left a pending secret.
      if (keySource === 'vault') await discardPendingSecrets(pendingJobTag(paths.dest), opts);
      await checkFreeSpace(dirname(paths.dest), await estimateOutputBytes(source, container, diskSize, dataOffset, blockSize, !sparse));
      const containerUuid = randomUUID();
      // The key is sealed and the header made before the output exists, so no data sector precedes them.
      prepared = await prepareEncryption(
        { format, keyBits, sectorSize, dataOffset, diskSize, containerUuid, sourceName: basename(src), pendingJob: pendingJobTag(paths.dest) },
        { ...opts, recoveryPassphrase: opts.addRecoveryPassphrase },
      );
      volumeKey = prepared.volumeKey;
      secretId = prepared.secretId;
      if (secretId && prepared.vaultUri) sealedNow = { secretId, vaultUri: prepared.vaultUri };
      output = await createImage(paths.temp, { format: container, virtualSize: diskSize, blockSize, uuid: containerUuid });
      ownsTemp = true;
      if (prepared.header) await writeLuksRegion(output, prepared.header);
      else await output.flush();
      await writeJournal(paths.journal, { ...journalBase, doneBatches: 0, secretId });
      journalWritten = true;
      // The journal now names the secret (--resume finds it): it is no longer pending.
      if (secretId) await settleSecret(secretId, opts);
    }

    const stats = await runCryptJob(
      {
        encrypt: true,
        input: source,
        output,
        layout: prepared.layout,
        selection: { base: 0n, payloadSize: prepared.layout.payloadSize, granule: BigInt(sparse ? blockSize : sectorSize), all: !sparse },
        inputBase: 0n,
        outputBase: dataOffset,
        volumeKey,
        journalPath: paths.journal,
        journal: { ...journalBase, secretId },
        skipBatches,
      },
      opts,
      pool,
    );
    const out = output;
    output = null;
    await out.close();
    await commitOutput(paths, opts.force === true);
    ownsTemp = false;
    sealedNow = null;
    const outputFileSize = BigInt((await stat(paths.dest)).size);
    const seconds = (performance.now() - started) / 1000;
    return {
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
      bytesProcessed: stats.bytesProcessed,
      bytesTotal: stats.bytesTotal,
      backend: stats.backend,
      kernel: stats.kernel,
      threads: stats.threads,
      directWrites: stats.directWrites,
      seconds,
      mbPerSecond: seconds > 0 ? Number(stats.bytesProcessed) / 1e6 / seconds : 0,
      resumed,
      secretId,
      kekId: prepared.kekId,
      vaultUri: prepared.vaultUri,
      luksUuid: prepared.luksUuid,
      warnings: warnings.list,
    };
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    volumeKey?.fill(0);
    // After a failure the run's own error is the one to report; closing is best effort before the temp file goes.
    if (output) await Promise.allSettled([output.close()]);
    await source.close();
    await pool?.destroy();
    // An interrupted run keeps its temp file, journal and secret (the journal names it): --resume continues.
    const keep = keepForResume(failure, opts.signal, journalWritten);
    if (ownsTemp && !keep) await discardOutput(paths);
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
 * Remove the secrets a killed run of this job left pending. Best effort when the vault is absent or the
 * principal may not list (the run then seals a new secret as before); other vault failures stop the run.
 */
async function discardPendingSecrets(job: string, opts: EncryptOptions): Promise<void> {
  let vault;
  try {
    vault = await openVolumeVault(opts.vault, opts.vaultCredentials);
  } catch (e) {
    if (isVhdcryptError(e, 'VAULT_NOT_FOUND')) return;
    throw e;
  }
  try {
    await vault.discardPending(job);
  } catch (e) {
    if (!isVhdcryptError(e, 'VAULT_FORBIDDEN')) throw e;
  } finally {
    await vault.close();
  }
}
