/**
 * A child process of `vhdcrypt serve --processes N` (read-only exports): it
 * opens and unlocks the image itself (read-only), then serves the connections
 * the parent hands over through IPC. Several processes spread the socket
 * copying and decryption of many client connections (nbdcopy uses 4) over
 * every core; read-only, so no write or allocation state needs sharing.
 */
import type { Socket } from 'node:net';
import { NbdServer } from './server.js';
import { openExportBacking, type OpenExportOptions } from './open-export.js';

/** The server limits a child applies to its own connections. */
export interface ConnectionLimits {
  readonly idleTimeoutMs?: number;
  readonly maxConnectionsPerPeer?: number;
}

export interface ChildInit {
  readonly kind: 'init';
  readonly path: string;
  readonly exportName: string;
  readonly options: OpenExportOptions;
  readonly limits: ConnectionLimits;
}

type ParentMessage = ChildInit | { readonly kind: 'conn' } | { readonly kind: 'close' };

let server: NbdServer | null = null;
const early: Socket[] = [];

// The parent coordinates shutdown; a terminal's SIGINT to the whole group must not kill us mid-request.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);

process.on('message', (msg: ParentMessage, handle?: unknown) => {
  if (msg.kind === 'init') {
    openExportBacking(msg.path, { ...msg.options, readOnly: true, readerThreads: 0 }).then(
      (backing) => {
        server = new NbdServer(backing, { exportName: msg.exportName, ...msg.limits });
        for (const s of early.splice(0)) server.serveSocket(s);
        process.send?.({ kind: 'ready' });
      },
      (e: unknown) => {
        process.send?.({ kind: 'failed', code: (e as { code?: string })?.code ?? 'NBD_CHILD_FAILED', message: (e as Error)?.message ?? String(e) });
        process.exit(1);
      },
    );
  } else if (msg.kind === 'conn' && handle !== undefined) {
    const socket = handle as Socket;
    if (server === null) early.push(socket);
    else server.serveSocket(socket);
  } else if (msg.kind === 'close') {
    const done = server === null ? Promise.resolve() : server.close();
    done.finally(() => process.exit(0));
  }
});

// The parent died (even by kill -9): stop serving, close the image, exit.
process.on('disconnect', () => {
  const done = server === null ? Promise.resolve() : server.close();
  done.finally(() => process.exit(0));
});
