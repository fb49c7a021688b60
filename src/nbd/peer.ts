/**
 * Who is at the other end of a connection, for the server's per-peer
 * connection cap: the peer's uid for a Unix socket (SO_PEERCRED, recorded by
 * the kernel at connect(2), so it cannot be forged; unix(7)), the remote
 * address for TCP. Without the native addon a Unix peer's uid is unknown and
 * every Unix client counts as one peer: the cap then bounds them together
 * (fail closed) rather than not at all.
 */
import type { Socket } from 'node:net';
import { nativeAddon } from '../native-addon.js';
import { socketFd } from './direct-replies.js';

/** A key naming the peer: 'uid:N', 'tcp:ADDRESS', or 'unix:unknown'. */
export function peerKey(socket: Socket): string {
  const address = socket.remoteAddress;
  if (address !== undefined) return `tcp:${address}`;
  const uid = peerUid(socket);
  return uid === undefined ? 'unix:unknown' : `uid:${uid}`;
}

/** The uid of a Unix socket's peer, or undefined when the socket is not one or the addon is missing. */
export function peerUid(socket: Socket): number | undefined {
  const fd = socketFd(socket);
  const f = nativeAddon()?.peerUid;
  if (fd === undefined || typeof f !== 'function') return undefined;
  const uid = (f as (fd: number) => unknown)(fd);
  return typeof uid === 'number' ? uid : undefined;
}
