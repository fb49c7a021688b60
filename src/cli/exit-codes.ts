/** The process exit status of an error: the one its code is declared with in src/error-codes.ts. */
import { exitStatusOf } from '../error-codes.js';
import type { VhdcryptError } from '../errors.js';

/** Map an error to the process exit status. */
export function exitCodeFor(e: VhdcryptError): number {
  return exitStatusOf(e.code);
}
