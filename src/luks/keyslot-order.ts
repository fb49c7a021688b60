/** Trying keyslots one after another, with one rule for the error when none opens. */
import { LuksError } from './errors.js';

/** Outcome of one keyslot: the volume key when its digest matched, null on mismatch. */
export type KeyslotAttempt = (id: number) => Promise<Uint8Array | null>;

/**
 * Tries ids in order. All mismatched -> LUKS_WRONG_PASSPHRASE (naming slots
 * that could not be tried); none could be tried -> the first slot's error.
 */
export async function tryKeyslots(ids: readonly number[], attempt: KeyslotAttempt): Promise<{ volumeKey: Uint8Array; keyslot: number }> {
  if (ids.length === 0) throw new LuksError('LUKS_NO_KEYSLOT', 'no active keyslot to try');
  const skipped: LuksError[] = [];
  let mismatches = 0;
  for (const id of ids) {
    try {
      const key = await attempt(id);
      if (key) return { volumeKey: key, keyslot: id };
      mismatches++;
    } catch (e) {
      if (!(e instanceof LuksError)) throw e;
      skipped.push(e);
    }
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
