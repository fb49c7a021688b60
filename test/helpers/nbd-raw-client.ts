/**
 * A bare NBD client for tests of misbehaving peers: it negotiates with
 * NBD_OPT_EXPORT_NAME (simple replies, no zero padding) and then hands back the
 * socket, so a test can send requests and then never read the replies, or
 * just sit idle. Nothing here buffers replies: a paused socket leaves them in
 * the kernel and the server.
 */
import { connect, type Socket } from 'node:net';
import * as P from '../../src/nbd/protocol.js';

export type RawTarget = { socketPath: string } | { host: string; port: number; localAddress?: string };

/** Read exactly n bytes (handshake only: small). */
function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      got = Buffer.concat([got, c]);
      if (got.length < n) return;
      cleanup();
      if (got.length > n) socket.unshift(got.subarray(n));
      resolve(got.subarray(0, n));
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`connection closed after ${got.length} of ${n} handshake bytes`));
    };
    const cleanup = (): void => {
      socket.off('data', onData);
      socket.off('close', onEnd);
      socket.pause();
    };
    socket.on('data', onData);
    socket.once('close', onEnd);
    socket.resume();
  });
}

/** Connect and negotiate the default export; resolves with the socket (paused) and the export size. */
export async function rawConnect(target: RawTarget): Promise<{ socket: Socket; size: bigint }> {
  const socket = 'socketPath' in target ? connect(target.socketPath) : connect({ host: target.host, port: target.port, localAddress: target.localAddress });
  socket.on('error', () => undefined);
  socket.pause();
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  try {
    const greeting = await readExactly(socket, 18);
    if (greeting.readBigUInt64BE(8) !== 0x49484156454f5054n) throw new Error('not a newstyle NBD server');
    const opt = Buffer.alloc(4 + 16);
    opt.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES, 0);
    opt.writeBigUInt64BE(0x49484156454f5054n, 4);
    opt.writeUInt32BE(P.NBD_OPT_EXPORT_NAME, 12);
    opt.writeUInt32BE(0, 16); // export name ''
    socket.write(opt);
    const info = await readExactly(socket, 10);
    return { socket, size: info.readBigUInt64BE(0) };
  } catch (e) {
    socket.destroy();
    throw e;
  }
}

/** An NBD_CMD_READ request header. */
export function readRequest(cookie: bigint, offset: bigint, length: number): Buffer {
  return P.encodeRequestHeader({ flags: 0, type: P.NBD_CMD_READ, cookie, offset, length });
}

/** Resolves when the socket closes (the server dropped it). */
export function closed(socket: Socket): Promise<void> {
  return socket.destroyed && socket.closed ? Promise.resolve() : new Promise((r) => socket.once('close', () => r()));
}
