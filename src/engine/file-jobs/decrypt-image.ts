/**
 * decryptImage: an encrypted image back into a plaintext one whose virtual
 * content is the original disk; unallocated payload stays unallocated in a
 * dynamic output. Written safely (temp file, fsync, rename) and resumably.
 */
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createImage, DEFAULT_BLOCK_SIZE, type WritableImage } from '../../image/index.js';
import { runCryptJob, runResultOf } from './crypt-job.js';
import { batchBytesForJob, poolForJob } from '../pool/crypt-pool.js';
import { startJob } from './job-hold.js';
import { EngineError } from '../errors.js';
import { isRemoteSource, sourceIdentity } from './source-image.js';
import { checkJournalMatches, writeJournal, type JournalState } from './resume-journal.js';
import {
  PLAINTEXT_CREATE_MODE, checkDestination, checkFreeSpace, commitOutput, discardOutput, findLeftover, plaintextOutputMode, setOutputMode,
} from './safe-output.js';
import { checkRunOptions, type RunOptions, type RunResult } from '../run-options.js';
import { unlockImage, type UnlockImageOptions } from '../../volume/index.js';
import { containerFor, estimateOutputBytes, openOutput } from './output-image.js';

export interface DecryptOptions extends RunOptions, Omit<UnlockImageOptions, 'vault' | 'vaultCredentials'> {}

/** Decrypt the image at `src` into a new plaintext image at `dst`. */
export async function decryptImage(src: string, dst: string, opts: DecryptOptions = {}): Promise<RunResult> {
  const checkedBatchBytes = checkRunOptions(opts);
  const started = performance.now();
  const { paths, source, warnings, hold } = await startJob(src, dst, opts);
  const batchBytes = batchBytesForJob(opts.batchBytes === undefined ? undefined : checkedBatchBytes, checkedBatchBytes, source.virtualSize);
  let failure: unknown;
  try {
    await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
    // Workers load their backend while the keys are made or unlocked; a small job runs inline (poolForJob).
    const pool = (hold.pool = poolForJob({ threads: opts.threads, backend: opts.backend }, source.virtualSize));
    void pool.warm();
    const unlocked = await unlockImage(source, opts);
    const volumeKey = (hold.volumeKey = unlocked.volumeKey);
    const layout = unlocked.layout;
    const container = opts.outFormat ?? containerFor(source.format);
    const blockSize = source.blockSize ?? DEFAULT_BLOCK_SIZE;
    if (layout.payloadSize <= 0n) throw new EngineError('ENGINE_NOT_ENCRYPTED', `${src}: the encrypted payload is empty`);
    const journalBase: Omit<JournalState, 'doneBatches' | 'secretId'> = {
      version: 1,
      operation: 'decrypt',
      source: await sourceIdentity(src, source),
      params: { format: layout.format, container, sectorSize: layout.sectorSize, dataOffset: String(layout.dataOffset), payloadSize: String(layout.payloadSize), blockSize },
      batchBytes,
    };
    let skipBatches = 0;
    let resumed = false;
    let output: WritableImage;
    const { resume: journal } = await findLeftover(paths, opts, warnings.warn);
    if (journal) {
      checkJournalMatches(journal, journalBase, paths.journal);
      // A temp file left by an older run may be readable by others: private before more plaintext goes in.
      await setOutputMode(paths, PLAINTEXT_CREATE_MODE);
      output = hold.output = await openOutput(paths.temp, container);
      hold.ownsTemp = true;
      skipBatches = journal.doneBatches;
      resumed = true;
      hold.journalWritten = true;
    } else {
      await discardOutput(paths);
      await checkFreeSpace(dirname(paths.dest), await estimateOutputBytes(source, container, layout.payloadSize, 0n, blockSize, false));
      // Plaintext: created private (0600 whatever the umask), never readable by others even while it is written.
      output = hold.output = await createImage(paths.temp, { format: container, virtualSize: layout.payloadSize, blockSize, mode: PLAINTEXT_CREATE_MODE });
      hold.ownsTemp = true;
      await output.flush();
      await writeJournal(paths.journal, { ...journalBase, doneBatches: 0, secretId: unlocked.secretId });
      hold.journalWritten = true;
    }
    const stats = await runCryptJob(
      {
        encrypt: false,
        input: source,
        output,
        layout,
        // Holes of the encrypted image are plaintext zeros: nothing to decrypt or write there.
        selection: { base: layout.dataOffset, payloadSize: layout.payloadSize, granule: BigInt(layout.sectorSize), all: false },
        inputBase: layout.dataOffset,
        outputBase: 0n,
        volumeKey,
        journalPath: paths.journal,
        journal: { ...journalBase, secretId: unlocked.secretId },
        skipBatches,
      },
      opts,
      pool,
    );
    await hold.closeOutput();
    await setOutputMode(paths, await plaintextOutputMode(isRemoteSource(src) ? null : src));
    await commitOutput(paths, opts.force === true);
    hold.ownsTemp = false;
    return runResultOf(stats, started, {
      operation: 'decrypt',
      source: isRemoteSource(src) ? src : resolve(src),
      destination: paths.dest,
      format: layout.format,
      container,
      sourceVirtualSize: source.virtualSize,
      outputVirtualSize: layout.payloadSize,
      outputFileSize: BigInt((await stat(paths.dest)).size),
      dataOffset: layout.dataOffset,
      sectorSize: layout.sectorSize,
      resumed,
      secretId: unlocked.secretId,
      kekId: null,
      vaultUri: unlocked.vaultUri,
      luksUuid: unlocked.info?.uuid ?? null,
      warnings: warnings.list,
    });
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    // An interrupted run keeps its (private, 0600) temp file and journal: --resume continues.
    await hold.release(failure, opts.signal);
  }
}
