/**
 * What a file job holds while it runs, let go of in one place whatever happens: the volume key (wiped), the output
 * (closed; best effort after a failure, whose own error is the one to report), the source, the worker pool, and the
 * temp file and journal, which go unless an interrupt keeps them for --resume (keepForResume).
 */
import type { DiskImage, WritableImage } from '../../image/index.js';
import type { CryptPool } from '../pool/crypt-pool.js';
import { runWarnings, type RunOptions } from '../run-options.js';
import { discardOutput, keepForResume, outputPaths, type OutputPaths } from './safe-output.js';
import { openSource } from './source-image.js';

/**
 * A file job's start: where its output goes, its source opened, its warnings (damage the image layer worked around,
 * such as a bad end footer read from its copy at offset 0, come first) and what it will hold.
 */
export async function startJob(src: string, dst: string, opts: RunOptions) {
  const paths = outputPaths(dst, opts.outputName);
  const source = await openSource(src, opts);
  const warnings = runWarnings(opts);
  for (const w of source.warnings) warnings.warn(w);
  return { paths, source, warnings, hold: new JobHold(source, paths) };
}

export class JobHold {
  output: WritableImage | null = null;
  volumeKey: Uint8Array | null = null;
  pool: CryptPool | null = null;
  /** The temp file is this run's (made or resumed by it) until it is renamed into place. */
  ownsTemp = false;
  /** Once the journal exists, an interrupt keeps the temp file and journal for --resume. */
  journalWritten = false;

  constructor(
    private readonly source: DiskImage,
    private readonly paths: OutputPaths,
  ) {}

  /** Close the finished output (its close fsyncs it) before it is renamed into place. */
  async closeOutput(): Promise<void> {
    const out = this.output;
    this.output = null;
    await out?.close();
  }

  /** Let go of everything; true when an interrupt keeps the run for --resume. */
  async release(failure: unknown, signal: AbortSignal | undefined): Promise<boolean> {
    this.volumeKey?.fill(0);
    if (this.output) await Promise.allSettled([this.output.close()]);
    await this.source.close();
    await this.pool?.destroy();
    const keep = keepForResume(failure, signal, this.journalWritten);
    if (this.ownsTemp && !keep) await discardOutput(this.paths);
    return keep;
  }
}
