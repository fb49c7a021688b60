/** Trying keyslots one after another, within one KDF budget, with one rule for the error when none opens. */
import { LuksError } from './errors.js';
import { DEFAULT_KDF_LIMITS, abortedKdf, type KdfLimits } from './kdf.js';

/** One unlock attempt: the keyslot to try first (else every active one, in order), the KDF budget, and abort. */
export interface UnlockAttempt {
  readonly keyslot?: number | undefined;
  readonly limits?: KdfLimits | undefined;
  readonly signal?: AbortSignal | undefined;
}

/**
 * One keyslot, checked but not yet run: `work` is what run() costs in kdfWork
 * units (its KDF and digest check); run() gives the volume key when the digest
 * matches, null on mismatch. Building it throws a LuksError for a keyslot that
 * cannot be tried (bad parameters, over a per-slot ceiling).
 */
export interface KeyslotAttempt {
  readonly work: number;
  readonly run: () => Promise<Uint8Array | null>;
}

/**
 * Tries ids in order, spending at most limits.maxUnlockWork units: a keyslot whose
 * work would take the total past the budget is not started, nor any after it,
 * and the attempt ends with LUKS_KDF_TOO_COSTLY naming the total and the
 * budget. (cryptsetup tries every keyslot; a header of 32 keyslots at the
 * per-slot ceiling would cost minutes per wrong passphrase.) Otherwise: all
 * mismatched -> LUKS_WRONG_PASSPHRASE (naming slots that could not be tried);
 * none could be tried -> the first slot's error. Abort -> LUKS_ABORTED at once.
 */
export async function tryKeyslots(
  ids: readonly number[],
  prepare: (id: number) => KeyslotAttempt,
  limits: KdfLimits,
  signal?: AbortSignal,
): Promise<{ volumeKey: Uint8Array; keyslot: number }> {
  // Limits objects made before the budget existed get the default one, never none.
  const budget = limits.maxUnlockWork ?? DEFAULT_KDF_LIMITS.maxUnlockWork;
  if (typeof budget !== 'number' || !(budget >= 0)) throw new LuksError('LUKS_BAD_ARG', `limits.maxUnlockWork expected a number >= 0, got ${String(budget)}`);
  if (ids.length === 0) throw new LuksError('LUKS_NO_KEYSLOT', 'no active keyslot to try');
  const skipped: LuksError[] = [];
  let mismatches = 0;
  let spent = 0;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (signal?.aborted) throw abortedKdf(signal, `keyslot ${id}`);
    let a: KeyslotAttempt;
    try {
      a = prepare(id);
    } catch (e) {
      if (!(e instanceof LuksError)) throw e;
      skipped.push(e);
      continue;
    }
    if (spent + a.work > budget) throw overBudget(ids, i, spent, mismatches, prepare, budget);
    spent += a.work;
    let key: Uint8Array | null;
    try {
      key = await a.run();
    } catch (e) {
      if (!(e instanceof LuksError) || e.code === 'LUKS_ABORTED') throw e;
      skipped.push(e);
      continue;
    }
    if (key) return { volumeKey: key, keyslot: id };
    mismatches++;
  }
  if (mismatches === 0) throw skipped[0]!;
  const note = skipped.length ? ` (not tried: ${skipped.map((e) => e.message).join('; ')})` : '';
  throw new LuksError('LUKS_WRONG_PASSPHRASE', `no keyslot opens with this passphrase; tried ${mismatches} keyslot(s)${note}`);
}

/** Active ids with the preferred one first; checks its range. */
export function keyslotOrder(active: readonly number[], preferred: number | undefined, max: number): number[] {
  if (preferred === undefined) return [...active];
  if (!Number.isInteger(preferred) || preferred < 0 || preferred >= max) {
    throw new LuksError('LUKS_KEYSLOT_OUT_OF_RANGE', `keyslot ${preferred} out of range 0..${max - 1}`);
  }
  if (!active.includes(preferred)) throw new LuksError('LUKS_KEYSLOT_INACTIVE', `keyslot ${preferred} is not active`);
  return [preferred, ...active.filter((i) => i !== preferred)];
}

/** LUKS_KDF_TOO_COSTLY for stopping before ids[at]: the total of every keyslot that could be tried, and the budget. */
function overBudget(ids: readonly number[], at: number, spent: number, mismatches: number, prepare: (id: number) => KeyslotAttempt, budget: number): LuksError {
  let total = spent;
  for (const id of ids.slice(at)) {
    try {
      total += prepare(id).work;
    } catch (e) {
      if (!(e instanceof LuksError)) throw e; // a keyslot that cannot be tried costs nothing
    }
  }
  const tried = mismatches > 0 ? `; ${mismatches} keyslot(s) tried did not open (${spent} units)` : '';
  return new LuksError(
    'LUKS_KDF_TOO_COSTLY',
    `keyslots ${ids.join(', ')} would cost ${total} KDF work units, over the per-attempt budget of ${budget} (limits.maxUnlockWork); ` +
      `stopped before keyslot ${ids[at]}${tried}; name the keyslot to try first or raise the budget`,
  );
}
