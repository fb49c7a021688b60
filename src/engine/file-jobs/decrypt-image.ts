/**
 * decryptImage: an encrypted image back into a plaintext one whose virtual
 * content is the original disk; unallocated payload stays unallocated in a
 * dynamic output. Written safely (temp file, fsync, rename) and resumably.
 */
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { createImage, DEFAULT_BLOCK_SIZE, type WritableImage } from '../../image/index.js';
import { runCryptJob, runResultOf, startOutputWrites } from './crypt-job.js';
import { batchBytesForJob, poolForJob } from '../pool/crypt-pool.js';
import { startJob } from './job-hold.js';
import { EngineError } from '../errors.js';
import { isRemoteSource, sourceIdentity } from './source-image.js';
import { checkJournalMatches, writeJournal, type JournalState } from './resume-journal.js';
import {
  PLAINTEXT_CREATE_MODE, checkDestination, checkFreeSpace, commitOutput, discardOutput, findLeftover, plaintextOutputMode, setOutputMode,
} from './safe-output.js';
import { checkRunOptions, type RunOptions, type RunResult } from '../run-options.js';
import { readLuksLayout, unlockImage, type PayloadLayout, type UnlockImageOptions } from '../../volume/index.js';
import { containerFor, estimateOutputBytes, openOutput } from './output-image.js';

export interface DecryptOptions extends RunOptions, Omit<UnlockImageOptions, 'vault' | 'vaultCredentials'> {}

/** Decrypt the image at `src` into a new plaintext image at `dst`. */
export async function decryptImage(src: string, dst: string, opts: DecryptOptions = {}): Promise<RunResult> {
  const checkedBatchBytes = checkRunOptions(opts);
  const started = performance.now();
  const { paths, source, warnings, hold } = await startJob(src, dst, opts);
  const batchBytes = batchBytesForJob(opts.batchBytes === undefined ? undefined : checkedBatchBytes, checkedBatchBytes, source.virtualSize);
  // The output's direct writes and reserved blocks, started as soon as it exists.
  let outputWrites: Promise<boolean> | undefined;
  let failure: unknown;
  try {
    await checkDestination(isRemoteSource(src) ? null : src, paths.dest, opts.force === true);
    // Workers load their backend while the keys are made or unlocked; a small job runs inline (poolForJob).
    const pool = (hold.pool = poolForJob({ threads: opts.threads, backend: opts.backend }, source.virtualSize));
    void pool.warm();
    const container = opts.outFormat ?? containerFor(source.format);
    const blockSize = source.blockSize ?? DEFAULT_BLOCK_SIZE;
    const journalBaseOf = async (layout: PayloadLayout): Promise<Omit<JournalState, 'doneBatches' | 'secretId'>> => {
      if (layout.payloadSize <= 0n) throw new EngineError('ENGINE_NOT_ENCRYPTED', `${src}: the encrypted payload is empty`);
      return {
        version: 1,
        operation: 'decrypt',
        source: await sourceIdentity(src, source),
        params: { format: layout.format, container, sectorSize: layout.sectorSize, dataOffset: String(layout.dataOffset), payloadSize: String(layout.payloadSize), blockSize },
        batchBytes,
      };
    };
    // Holes of the encrypted image are plaintext zeros: nothing to decrypt or write there.
    const selectionOf = (layout: PayloadLayout) => ({ base: layout.dataOffset, payloadSize: layout.payloadSize, granule: BigInt(layout.sectorSize), all: false });
    // A fresh output: made private (0600 whatever the umask: plaintext is never readable by others, even while it is
    // written), and its blocks reserved from then on (crypt-job.ts startOutputWrites). Nothing goes into it before
    // the key is unlocked and the journal written.
    const createFresh = async (layout: PayloadLayout) => {
      await discardOutput(paths);
      await checkFreeSpace(dirname(paths.dest), await estimateOutputBytes(source, container, layout.payloadSize, 0n, blockSize, false));
      const output = (hold.output = await createImage(paths.temp, { format: container, virtualSize: layout.payloadSize, blockSize, mode: PLAINTEXT_CREATE_MODE }));
      hold.ownsTemp = true;
      outputWrites = startOutputWrites({ input: source, output, selection: selectionOf(layout), outputBase: 0n });
      // Taken by the job, or awaited in `finally` when the run fails before it.
      outputWrites.catch(() => undefined);
      await output.flush();
      return output;
    };
    // A LUKS header gives the payload's layout without the key: with no interrupted run to continue or replace, the
    // output is made and its blocks reserved while the key is unlocked (a plain volume's layout is in its vault
    // secret's tags, so its output comes after).
    const leftover = await findLeftover(paths, opts, warnings.warn);
    const untouched = leftover.journal === null && !leftover.tempExists;
    const readLayout = untouched ? await readLuksLayout(source) : null;
    const early = readLayout !== null ? { journalBase: await journalBaseOf(readLayout), output: await createFresh(readLayout) } : null;
    const unlocked = await unlockImage(source, opts);
    const volumeKey = (hold.volumeKey = unlocked.volumeKey);
    const layout = unlocked.layout;
    if (readLayout !== null && !sameLayout(readLayout, layout)) {
      throw new EngineError('ENGINE_IO', `${src}: its LUKS header changed while the run read it`);
    }
    const journalBase = early?.journalBase ?? (await journalBaseOf(layout));
    let skipBatches = 0;
    let resumed = false;
    let output: WritableImage;
    if (early !== null) {
      output = early.output;
    } else if (leftover.resume) {
      checkJournalMatches(leftover.resume, journalBase, paths.journal);
      // A temp file left by an older run may be readable by others: private before more plaintext goes in.
      await setOutputMode(paths, PLAINTEXT_CREATE_MODE);
      output = hold.output = await openOutput(paths.temp, container);
      hold.ownsTemp = true;
      skipBatches = leftover.resume.doneBatches;
      resumed = true;
      hold.journalWritten = true;
    } else {
      output = await createFresh(layout);
    }
    if (!resumed) {
      await writeJournal(paths.journal, { ...journalBase, doneBatches: 0, secretId: unlocked.secretId });
      hold.journalWritten = true;
    }
    const stats = await runCryptJob(
      {
        encrypt: false,
        input: source,
        output,
        layout,
        selection: selectionOf(layout),
        ...(outputWrites ? { outputWrites } : {}),
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
    // The reservation works on the output's descriptor: it ends before the output is closed.
    await outputWrites?.catch(() => undefined);
    // An interrupted run keeps its (private, 0600) temp file and journal: --resume continues.
    await hold.release(failure, opts.signal);
  }
}

/** The same payload from two reads of one header. */
function sameLayout(a: PayloadLayout, b: PayloadLayout): boolean {
  return a.format === b.format && a.dataOffset === b.dataOffset && a.payloadSize === b.payloadSize && a.sectorSize === b.sectorSize;
}
