/** Options and results shared by encryptImage and decryptImage. */
import type { BackendChoice } from '../crypto/index.js';
import type { ParentSearchOptions } from '../image/index.js';
import { checkBatchBytes, type EncryptionFormat } from '../volume/index.js';
import { EngineError } from './errors.js';

export type OutputFormat = 'vhd-fixed' | 'vhd-dynamic' | 'raw';
export const OUTPUT_FORMATS: readonly OutputFormat[] = ['vhd-fixed', 'vhd-dynamic', 'raw'];

/**
 * The checks encryptImage and decryptImage share, before anything is opened: the output container and the batch
 * size (the volume layer's check, the streams' too). Returns the batch size to use.
 */
export function checkRunOptions(o: RunOptions): number {
  if (o.outFormat !== undefined && !OUTPUT_FORMATS.includes(o.outFormat)) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `output format expected ${OUTPUT_FORMATS.join(', ')}, got ${String(o.outFormat)}`);
  }
  if (o.outputName !== undefined && (typeof o.outputName !== 'string' || !OUTPUT_NAME.test(o.outputName))) {
    throw new EngineError('ENGINE_BAD_ARGUMENT', `output name expected 1-200 of A-Z a-z 0-9 . _ - not starting with a dot, got ${JSON.stringify(String(o.outputName).slice(0, 220))}`);
  }
  return checkBatchBytes(o.batchBytes);
}

/** A name for the temp file and journal: one path component, never hidden twice nor a parent reference. */
const OUTPUT_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

export interface Progress {
  /** Bytes of payload done, including those done before a resume. */
  readonly bytesDone: bigint;
  readonly bytesTotal: bigint;
  /** Bytes per second over this run. */
  readonly rate: number;
}

/** parentDirs / allowAbsoluteParents: where a differencing source's parents may be (openImage). */
export interface RunOptions extends ParentSearchOptions {
  /** Worker threads (default: one per core). */
  readonly threads?: number;
  readonly backend?: BackendChoice;
  /** Replace an existing destination; discard a leftover interrupted run. */
  readonly force?: boolean;
  /** Finish an interrupted run from its journal (starts afresh when there is none). */
  readonly resume?: boolean;
  /**
   * Stops the run with ENGINE_ABORTED (LUKS_ABORTED inside a KDF). A run whose journal was written keeps its temp
   * file, journal and vault secret, so `resume` continues from the last checkpoint.
   */
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: Progress) => void;
  /** Called with each warning as it arises (source damage worked around, a resume that starts over); see RunResult.warnings. */
  readonly onWarning?: (message: string) => void;
  /** Output container (default: follows the input; differencing chains are flattened into dynamic). */
  readonly outFormat?: OutputFormat;
  /** Vault URI (default: the embedded vault). */
  readonly vault?: string;
  readonly vaultCredentials?: unknown;
  /** Bytes per batch (default 4 MiB), a multiple of 4096. */
  readonly batchBytes?: number;
  /** Payload bytes between resume checkpoints (flush + journal; default 256 MiB). */
  readonly checkpointBytes?: number;
  /**
   * The name the temp file and journal are called by in the destination's directory (`.NAME.vhdcrypt-tmp`,
   * `.NAME.vhdcrypt-journal`; default: the destination's own name). A queue names them after its job, so a retried
   * job resumes on whichever machine takes it.
   */
  readonly outputName?: string;
}

export interface RunResult {
  readonly operation: 'encrypt' | 'decrypt';
  readonly source: string;
  readonly destination: string;
  readonly format: EncryptionFormat;
  /** 'vhd-differencing': an encrypted delta (encrypt --parent-image). */
  readonly container: OutputFormat | 'vhd-differencing';
  readonly sourceVirtualSize: bigint;
  readonly outputVirtualSize: bigint;
  readonly outputFileSize: bigint;
  readonly dataOffset: bigint;
  readonly sectorSize: number;
  /** Payload bytes put through AES-XTS in this run. */
  readonly bytesProcessed: bigint;
  /** Payload bytes that needed processing in the whole job (allocated data). */
  readonly bytesTotal: bigint;
  readonly backend: string;
  readonly kernel: string;
  readonly threads: number;
  /** True when the output's data was written with O_DIRECT (past the page cache). */
  readonly directWrites: boolean;
  /** The whole job's seconds: opening, keys and vault, header, the output's reservation, the data, the commit. */
  readonly seconds: number;
  /** Of those, the pass over the payload alone (batches read, crypted, written and checkpointed). */
  readonly dataSeconds: number;
  /** bytesProcessed over the whole job's seconds. */
  readonly mbPerSecond: number;
  readonly resumed: boolean;
  readonly secretId: string | null;
  readonly kekId: string | null;
  readonly vaultUri: string | null;
  readonly luksUuid: string | null;
  /** What the run worked around or decided on its own: source image damage, a resume with nothing to resume. */
  readonly warnings: readonly string[];
}

/** The warnings of one run: each passed to onWarning as it arises and kept for RunResult.warnings. */
export function runWarnings(opts: RunOptions): { readonly list: readonly string[]; warn(message: string): void } {
  const list: string[] = [];
  return {
    list,
    warn(message) {
      list.push(message);
      opts.onWarning?.(message);
    },
  };
}
