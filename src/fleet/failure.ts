/**
 * Which failures a job retries and which it does not. The typed codes of bad input, a wrong key, a vault that
 * refuses, an unsupported feature or a bad option fail the job at once: running it again would fail the same way.
 * I/O errors, a worker or vault storage that failed, a connection that dropped, no space (an operator frees some)
 * and anything untyped are transient: retried with backoff. The job's failure reads `CODE: message`.
 */
import { EXIT, exitStatusOf } from '../error-codes.js';
import { isVhdcryptError } from '../errors.js';

/** Typed codes that are worth another attempt although their exit status is not 1. */
const TRANSIENT_CODES = new Set(['ENGINE_NO_SPACE', 'VAULT_STORAGE', 'NBD_CONNECT_FAILED', 'NBD_DISCONNECTED']);
/** System errors about the input itself: a path that is not there or not readable. */
const PERMANENT_ERRNOS = new Set(['ENOENT', 'EACCES', 'EPERM', 'EISDIR', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);

export interface JobFailure {
  readonly code: string;
  readonly message: string;
  readonly permanent: boolean;
}

export function classifyFailure(e: unknown): JobFailure {
  const message = (e as Error | null)?.message ?? String(e);
  if (isVhdcryptError(e)) {
    const status = exitStatusOf(e.code);
    const permanent = !TRANSIENT_CODES.has(e.code) && status !== EXIT.failed && status !== EXIT.interrupted;
    return { code: e.code, message, permanent };
  }
  const errno = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof errno === 'string' && /^[A-Z][A-Z0-9_]*$/.test(errno)) return { code: errno, message, permanent: PERMANENT_ERRNOS.has(errno) };
  return { code: 'INTERNAL', message, permanent: false };
}

/** `CODE: message`, as a job's failedReason. */
export function failureText(f: { code: string; message: string }): string {
  return `${f.code}: ${f.message}`;
}

/** The code and message of a job's failedReason (`CODE: message`; BullMQ's own reasons have no code). */
export function parseFailure(reason: string | undefined): { code: string; message: string } {
  const text = reason ?? '';
  const m = /^([A-Z][A-Z0-9_]+): ([\s\S]*)$/.exec(text);
  return m ? { code: m[1]!, message: m[2]! } : { code: 'QUEUE', message: text };
}
