/** Typed errors of the NBD part; the codes and their exit statuses are declared in src/error-codes.ts. */
import { nbdErrnoNameOf, type CodesOf, type NbdErrnoName } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN } from './protocol.js';

export type NbdErrorCode = CodesOf<'NBD'>;

/** Anything that goes wrong in the NBD server or client. */
export class NbdError extends VhdcryptError {
  declare readonly code: NbdErrorCode;
  constructor(code: NbdErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** The protocol's number for each error value name (proto.md "Error values"). */
const NBD_ERRNO: Readonly<Record<NbdErrnoName, number>> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  ENOTSUP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

/** System error codes a backing's file operations raise, and the NBD error value each is answered with. */
const SYSTEM_ERRNO: Readonly<Record<string, NbdErrnoName>> = {
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EFBIG: 'ENOSPC',
  EPERM: 'EPERM',
  EACCES: 'EPERM',
  EROFS: 'EPERM',
  ENOMEM: 'ENOMEM',
};

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

/**
 * A system call of the native reply thread failed (dup, fcntl, eventfd at its start): the message says which and
 * why; `errnoName` is the errno's name (EMFILE, EBADF, ...).
 */
export class NbdNativeIoError extends NbdError {
  readonly errnoName: string;
  constructor(message: string, errnoName: string, options?: { cause?: unknown }) {
    super('NBD_NATIVE_IO', message, options);
    this.errnoName = errnoName;
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
  if (e instanceof VhdcryptError) return NBD_ERRNO[nbdErrnoNameOf(e.code)];
  const code = (e as { code?: unknown } | null)?.code;
  const system = typeof code === 'string' && Object.hasOwn(SYSTEM_ERRNO, code) ? SYSTEM_ERRNO[code] : undefined;
  return NBD_ERRNO[system ?? 'EIO'];
}
