/**
 * The resume journal beside the temp file: what job this is and how many
 * leading batches are durably written. It is replaced atomically (write new,
 * fsync, rename) only after the output itself was flushed, so it never claims
 * more than the disk holds. It holds no key material.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { EngineError } from '../errors.js';
import { syncDir } from '../../new-file.js';

export interface JournalState {
  readonly version: 1;
  readonly operation: 'encrypt' | 'decrypt';
  /** Identity of the source: path, size, mtime; a changed source cannot be resumed. */
  readonly source: { readonly path: string; readonly size: number; readonly mtimeMs: number };
  /** The options that decide the output's content (format, sizes, key source kind). */
  readonly params: Readonly<Record<string, string | number | boolean | null>>;
  readonly batchBytes: number;
  /** Batches [0, doneBatches) are durably written. */
  readonly doneBatches: number;
  /** Vault secret sealed for this output (plain volumes need it to resume). */
  readonly secretId: string | null;
}

export async function writeJournal(path: string, state: JournalState): Promise<void> {
  const tmp = path + '.new';
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(state));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dirname(path));
}

/** The journal, or null when there is none. */
export async function readJournal(path: string): Promise<JournalState | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${path}: resume journal is not valid JSON; run again without --resume (or with --force)`, { cause: e });
  }
  const o = j as Partial<JournalState>;
  if (o?.version !== 1 || (o.operation !== 'encrypt' && o.operation !== 'decrypt') || !Number.isSafeInteger(o.doneBatches) || !Number.isSafeInteger(o.batchBytes) || typeof o.source !== 'object' || typeof o.params !== 'object') {
    throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${path}: resume journal is damaged; run again without --resume (or with --force)`);
  }
  return o as JournalState;
}

/** Throw unless the journal describes the same job. */
export function checkJournalMatches(j: JournalState, want: Omit<JournalState, 'doneBatches' | 'secretId'>, path: string): void {
  const diffs = journalDiffs(j, want);
  if (diffs.length) {
    throw new EngineError('ENGINE_JOURNAL_MISMATCH', `${path}: the interrupted run differs (${diffs.join('; ')}); repeat it with the same options, or start over with --force`);
  }
}

/** How the journal's job differs from `want` (empty: the same job). */
export function journalDiffs(j: JournalState, want: Omit<JournalState, 'doneBatches' | 'secretId'>): string[] {
  const diffs: string[] = [];
  if (j.operation !== want.operation) diffs.push(`operation ${j.operation} vs ${want.operation}`);
  if (j.source.path !== want.source.path || j.source.size !== want.source.size || j.source.mtimeMs !== want.source.mtimeMs) diffs.push('the source changed');
  if (j.batchBytes !== want.batchBytes) diffs.push('batch size');
  for (const k of new Set([...Object.keys(j.params), ...Object.keys(want.params)])) {
    if (j.params[k] !== want.params[k]) diffs.push(`${k}: ${String(j.params[k])} vs ${String(want.params[k])}`);
  }
  return diffs;
}
