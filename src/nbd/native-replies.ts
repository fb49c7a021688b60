/**
 * The only way into the NBD server's native reply thread (native/nbd_direct_read.cc): its classes, typed, from the
 * addon src/native-addon.ts loads (error factory installed first). Errors the classes raise: NbdError
 * NBD_NATIVE_BAD_ARG for arguments they refuse, NbdNativeIoError (NBD_NATIVE_IO, with the errno's name) for a
 * failed system call, and the crypto core's XtsError codes for a key that cannot be an XTS key.
 */
import '../crypto/native-backend.js';
import { nativeAddon, registerNativeErrors } from '../native-addon.js';
import { NbdError, NbdNativeIoError, type NbdErrorCode } from './errors.js';

// The reply thread's own codes; a key it cannot expand raises the crypto core's, registered by the import above.
registerNativeErrors('NBD', (code, message, errnoName) =>
  code === 'NBD_NATIVE_IO' ? new NbdNativeIoError(message, errnoName ?? 'EIO') : new NbdError(code as NbdErrorCode, message),
);

/** A key schedule and a dup of the container file, shared by a server's reply threads. */
export interface NativeDirectReadFile {
  /** Drop this handle; the schedule is wiped once no reply thread uses it any more. */
  dispose(): void;
}

/** One NBD connection's reply thread: READs answered whole from the file, other replies sent as given. */
export interface NativeReplySender {
  /** Queue a READ reply: `head`, then the decrypted bytes; `onReadError` instead if the first chunk cannot be read. False once closed. */
  read(head: Uint8Array, onReadError: Uint8Array, filePos: number, length: number, firstTweak: bigint, tweakStep: number, sectorSize: number): boolean;
  /** Queue a whole reply (copied, and wiped once sent). False once closed. */
  send(reply: Uint8Array): boolean;
  /** Stop the thread (queued replies are dropped) and close its descriptors. */
  close(): void;
}

/** The addon's NBD read path. */
export interface NativeReplies {
  /** (key, kernel, fd): the key is expanded into a schedule (the caller keeps and wipes its key), fd is dup()ed. */
  DirectReadFile: new (key: Uint8Array, kernel: string, fd: number) => NativeDirectReadFile;
  /**
   * (source, socketFd, onDone): the socket is dup()ed and made non-blocking (the thread must never block in
   * sendmsg, or close() could not stop it while a client does not read).
   */
  ReplySender: new (source: NativeDirectReadFile, socketFd: number, onDone: (completed: number, failure?: string) => void) => NativeReplySender;
}

/** The reply thread's classes, or undefined when the addon is missing or this platform has none (not Linux). */
export function nativeReplies(): NativeReplies | undefined {
  const addon = nativeAddon();
  const { DirectReadFile, ReplySender } = (addon ?? {}) as Partial<NativeReplies>;
  if (typeof DirectReadFile !== 'function' || typeof ReplySender !== 'function') return undefined;
  return { DirectReadFile, ReplySender };
}
