/**
 * The output's life: it is written to a temp file in the destination's
 * directory, made durable, and renamed into place only when complete, so the
 * destination name never holds a partial image (even after kill -9).
 */
import { chmod, open, rename, rm, stat, statfs } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { EngineError } from '../errors.js';
import { readJournal, type JournalState } from './resume-journal.js';
import { syncDir } from '../../new-file.js';

export interface OutputPaths {
  readonly dest: string;
  readonly temp: string;
  readonly journal: string;
  /** Exists from just before an encrypt seals its key until its journal names the secret (encrypt-image.ts). */
  readonly sealing: string;
}

/**
 * The temp, journal and sealing-marker names beside the destination: `.NAME.vhdcrypt-tmp`, `.NAME.vhdcrypt-journal`
 * and `.NAME.vhdcrypt-sealing`, NAME being `name` (RunOptions.outputName, checked by checkRunOptions) or else the
 * destination's own name.
 */
export function outputPaths(dest: string, name?: string): OutputPaths {
  const abs = resolve(dest);
  const dir = dirname(abs);
  const base = name ?? basename(abs);
  return { dest: abs, temp: join(dir, `.${base}.vhdcrypt-tmp`), journal: join(dir, `.${base}.vhdcrypt-journal`), sealing: join(dir, `.${base}.vhdcrypt-sealing`) };
}

/**
 * Create the sealing marker, durably (the file and its directory entry), before a key is sealed: a run killed
 * between the seal and its journal then leaves the marker, and only then does the next run of the job look for
 * the pending secret it sealed (a scan of the vault's secrets).
 */
export async function markSealing(path: string): Promise<void> {
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await syncDir(dirname(path));
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Refuse an existing destination unless forced; refuse writing over the source. */
export async function checkDestination(src: string | null, dest: string, force: boolean): Promise<void> {
  const s = src === null ? null : await stat(src);
  let d;
  try {
    d = await stat(dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (s && d.ino === s.ino && d.dev === s.dev) throw new EngineError('ENGINE_SAME_FILE', `${dest} is the source image; choose another destination`);
  if (!force) throw new EngineError('ENGINE_DEST_EXISTS', `${dest} already exists (use --force to replace it)`);
}

/** Refuse to start when the destination's file system reports less free space than needed. */
export async function checkFreeSpace(dir: string, needed: bigint): Promise<void> {
  let free: bigint;
  try {
    const s = await statfs(dir, { bigint: true });
    free = s.bavail * s.bsize;
  } catch (e) {
    // statfs is not available everywhere; the write path still maps ENOSPC.
    if ((e as NodeJS.ErrnoException).code === 'ENOSYS') return;
    throw e;
  }
  if (free < needed) {
    throw new EngineError('ENGINE_NO_SPACE', `${dir} has ${free} bytes free; the output needs about ${needed} (free some space or choose another destination)`);
  }
}

/** Permission bits a plaintext output is created with: only its owner reads and writes it, whatever the umask. */
export const PLAINTEXT_CREATE_MODE = 0o600;

/**
 * The final mode of a plaintext output: 0600, or the source file's mode when
 * that is tighter (bits the source withholds are withheld too). An NBD source
 * has no mode: 0600.
 */
export async function plaintextOutputMode(src: string | null): Promise<number> {
  if (src === null) return PLAINTEXT_CREATE_MODE;
  return PLAINTEXT_CREATE_MODE & (await stat(src)).mode;
}

/** Give the finished temp file its final mode before it is renamed into place (a resumed temp file too). */
export async function setOutputMode(p: OutputPaths, mode: number): Promise<void> {
  await chmod(p.temp, mode);
}

/** Move the finished temp file into place (it was fsynced by its image's close). */
export async function commitOutput(p: OutputPaths, force: boolean): Promise<void> {
  if (!force && (await exists(p.dest))) throw new EngineError('ENGINE_DEST_EXISTS', `${p.dest} appeared while writing (use --force to replace it)`);
  await rename(p.temp, p.dest);
  await syncDir(dirname(p.dest));
  await rm(p.journal, { force: true });
}

/**
 * Whether a failed run keeps its temp file and journal for --resume: only an interrupt (the run's AbortSignal fired:
 * SIGINT, SIGTERM, a library abort), and only once its journal exists. The journal never names a batch that was not
 * fsynced first, so what is kept is consistent. Other failures discard: a write error or ENOSPC leaves a temp file
 * that holds the space the user must free, and a bad key or input would fail again the same way.
 */
export function keepForResume(error: unknown, signal: AbortSignal | undefined, journalWritten: boolean): boolean {
  return journalWritten && error !== undefined && signal?.aborted === true;
}

/** The warning of a --resume that found no interrupted run to finish (or only part of one). */
export function nothingToResume(dest: string, journal: boolean, temp: boolean): string {
  const found = journal ? ' (only its journal was left)' : temp ? ' (only its temp file was left, no journal)' : '';
  return `--resume: no interrupted run of ${dest} to finish${found}; starting over`;
}

/** Remove the temp file and journal after an error (not an interrupt, see keepForResume) or before starting over. */
export async function discardOutput(p: OutputPaths): Promise<void> {
  await rm(p.temp, { force: true });
  await rm(p.journal, { force: true });
  await rm(p.journal + '.new', { force: true });
}

/** What a job found beside its destination. */
export interface Leftover {
  /** The journal of the interrupted run to finish (--resume, with its journal and its temp file there), else null. */
  readonly resume: JournalState | null;
  /** The journal found, resumed or not. */
  readonly journal: JournalState | null;
  /** Whether the temp file was there. */
  readonly tempExists: boolean;
}

/**
 * What happens to an interrupted run's leftovers: with --resume, and both its journal and its temp file there, it is
 * finished; a leftover without --resume or --force is refused (ENGINE_TEMP_EXISTS); --resume with nothing (or only
 * part of a run) to finish warns that it starts over. Starting over is the caller's (it discards with discardOutput).
 */
export async function findLeftover(p: OutputPaths, opts: { readonly resume?: boolean; readonly force?: boolean }, warn: (message: string) => void): Promise<Leftover> {
  const journal = await readJournal(p.journal);
  const tempExists = await exists(p.temp);
  if (opts.resume && journal && tempExists) return { resume: journal, journal, tempExists };
  if ((journal || tempExists) && !opts.resume && !opts.force) {
    throw new EngineError('ENGINE_TEMP_EXISTS', `an interrupted run left ${tempExists ? p.temp : p.journal}; use --resume to finish it or --force to start over`);
  }
  if (opts.resume) warn(nothingToResume(p.dest, journal !== null, tempExists));
  return { resume: null, journal, tempExists };
}
