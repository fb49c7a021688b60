/** Typed errors of the engine; the codes and their exit statuses are declared in src/error-codes.ts. */
import type { CodesOf } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';

export type EngineErrorCode = CodesOf<'ENGINE'>;

export class EngineError extends VhdcryptError {
  declare readonly code: EngineErrorCode;
  constructor(code: EngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** ENOSPC / EDQUOT from a write become ENGINE_NO_SPACE; other errors pass through. */
export function mapWriteError(e: unknown, where: string): unknown {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new EngineError('ENGINE_NO_SPACE', `${where}: no space left on the device (free some space and run again)`, { cause: e });
  }
  return e;
}
