/** Typed errors of the NBD part (codes prefixed NBD_). */
import { VhdcryptError } from '../errors.js';
import { NBD_EINVAL } from './protocol.js';

/** Anything that goes wrong in the NBD server or client. */
export class NbdError extends VhdcryptError {}

/**
 * A request the backing refuses, carrying the NBD error value to send back
 * (proto.md "Error values"); the connection stays open.
 */
export class NbdRequestError extends NbdError {
  readonly errno: number;
  constructor(errno: number, message: string, options?: { cause?: unknown }) {
    super('NBD_REQUEST_FAILED', message, options);
    this.errno = errno;
  }
}

/** The peer broke the protocol (bad magic, impossible length, unknown flags): the connection is closed. */
export class NbdProtocolError extends NbdError {
  constructor(message: string) {
    super('NBD_PROTOCOL', message);
  }
}

/** The peer closed the connection (or it failed) before a message was complete. */
export class NbdDisconnectedError extends NbdError {
  constructor(message = 'the NBD peer closed the connection', options?: { cause?: unknown }) {
    super('NBD_DISCONNECTED', message, options);
  }
}

/** An NBD server answered a client request with an error value. */
export class NbdServerError extends NbdError {
  readonly errno: number;
  constructor(errno: number, message: string) {
    super('NBD_SERVER_ERROR', message);
    this.errno = errno;
  }
}

/** Map an error thrown by a backing to the NBD error value for the reply. */
export function nbdErrnoFor(e: unknown): number {
  if (e instanceof NbdRequestError) return e.errno;
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return 28;
  if (code === 'EPERM' || code === 'EACCES' || code === 'EROFS') return 1;
  if (code === 'ENOMEM') return 12;
  if (typeof code === 'string' && /NO_SPACE|ENOSPC/.test(code)) return 28;
  if (typeof code === 'string' && /READ_ONLY|NOT_WRITABLE/.test(code)) return 1;
  if (typeof code === 'string' && /RANGE|BAD_ARG|OUT_OF_BOUNDS/.test(code)) return NBD_EINVAL;
  return 5; // NBD_EIO
}
