/** Typed errors of the engine (issue 6); codes are stable and mapped to exit statuses by the CLI. */
import { VhdcryptError } from '../errors.js';

export type EngineErrorCode =
  | 'ENGINE_BAD_ARGUMENT'
  | 'ENGINE_DEST_EXISTS'
  | 'ENGINE_SAME_FILE'
  | 'ENGINE_TEMP_EXISTS'
  | 'ENGINE_NO_SPACE'
  | 'ENGINE_ABORTED'
  | 'ENGINE_WORKER_FAILED'
  | 'ENGINE_NO_JOURNAL'
  | 'ENGINE_JOURNAL_MISMATCH'
  | 'ENGINE_NO_KEY_SOURCE'
  | 'ENGINE_NOT_ENCRYPTED'
  | 'ENGINE_PLAINTEXT_NOT_CONFIRMED'
  | 'ENGINE_PLAINTEXT_REFUSED'
  | 'ENGINE_UNSUPPORTED_FORMAT'
  | 'ENGINE_UNSUPPORTED_SECTOR_SIZE'
  | 'ENGINE_HEADER_TOO_LARGE'
  | 'ENGINE_STREAM_BAD_INPUT'
  | 'ENGINE_STREAM_ORDER'
  | 'ENGINE_IO';

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
