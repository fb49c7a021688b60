/**
 * An NBD server for one export over a Unix socket or TCP. Every connection
 * shares the one backing (so flush is consistent across connections and
 * CAN_MULTI_CONN is honest). A misbehaving client only ever loses its own
 * connection; close() finishes in-flight requests, flushes and closes the
 * backing.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import type { NbdBacking } from './backing.js';
import { releaseIdleMemory, returnFreedMemory } from './buffer-pool.js';
import { ByteReader } from './byte-reader.js';
import { NbdError } from './errors.js';
import { peerKey } from './peer.js';
import { ReplyBudget } from './reply-budget.js';
import { negotiate } from './server-handshake.js';
import { Transmission } from './server-transmission.js';
import type { NbdTlsCredentials } from './tls.js';
import { formatNbdUri } from './uri.js';

export interface NbdServerOptions {
  /** The export's name; clients asking for '' get it too. Default ''. */
  readonly exportName?: string;
  /** Requests handled at once per connection (default 16). */
  readonly maxInFlight?: number;
  /** A client that has not finished negotiating by then is dropped (default 30 s). */
  readonly handshakeTimeoutMs?: number;
  /** Connections accepted at once; more are refused (default 128). Each may hold up to 64 MiB of WRITE payloads (256 MiB for all). */
  readonly maxConnections?: number;
  /**
   * A connection with no request in flight, no reply waiting to be sent and no new request for this long is closed
   * (0 = never), so idle clients cannot hold every slot. Default DEFAULT_IDLE_TIMEOUT_MS.
   */
  readonly idleTimeoutMs?: number;
  /** Connections one peer (a Unix socket's uid, a TCP address: peer.ts) may hold at once. Default DEFAULT_MAX_CONNECTIONS_PER_PEER. */
  readonly maxConnectionsPerPeer?: number;
  /** Reply bytes one connection may hold in memory before its requests wait (default 2 MiB; larger READs are streamed). */
  readonly maxQueuedReplyBytes?: number;
  /** Reply bytes all connections together may hold before requests wait (default 256 MiB). */
  readonly maxReplyBytes?: number;
  /** Diagnostics (one line per dropped connection); never given key material. */
  readonly log?: (line: string) => void;
  /**
   * TLS (proto.md "TLS support"): 'require' refuses every option but STARTTLS/ABORT before TLS; 'on' lets each
   * client choose. The caller owns the credentials (and disposes of them after close()). Default: no TLS.
   */
  readonly tls?: { readonly mode: 'require' | 'on'; readonly credentials: NbdTlsCredentials };
}

/**
 * Tools that copy or convert (nbdcopy, qemu-img, nbdfuse) keep their connections busy; one left open with nothing
 * to do for a minute is more likely a stuck or hostile client than a user. Long-lived attachments that may sit idle
 * (a kernel nbd device, a VM disk) should run with the idle timeout off and rely on the per-peer cap.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** A quarter of the default 128 slots: far more than a client needs (nbdcopy opens 4), and 4 peers are needed to fill the server. */
export const DEFAULT_MAX_CONNECTIONS_PER_PEER = 32;

/** Where to listen: a Unix socket path, or a TCP port on a host (default 127.0.0.1). */
export type NbdEndpoint = { readonly socketPath: string } | { readonly port: number; readonly host?: string };

interface Connection {
  /** The plain socket, then the TLS socket once STARTTLS has succeeded. */
  socket: Socket;
  transmission: Transmission | null;
  done: Promise<void>;
}

export class NbdServer {
  private server: Server | null = null;
  private readonly connections = new Set<Connection>();
  private shuttingDown = false;
  private closing: Promise<void> | null = null;
  private listenedUri: string | null = null;
  private socketPath: string | null = null;
  private readonly exportName: string;
  /**
   * Reply bytes held for all connections. With the defaults, 128 connections x 2 MiB of small replies fit, so clients
   * that never read cannot starve the others; streamed READs hold 2 x 1 MiB per connection besides (not counted here).
   */
  private readonly replyBudget: ReplyBudget;
  /** WRITE payload bytes received and not yet written, for all connections (their release needs only the disk). */
  private readonly writeBudget: ReplyBudget;
  /** Open connections per peer (peer.ts), for the per-peer cap. */
  private readonly perPeer = new Map<string, number>();

  constructor(
    private readonly backing: NbdBacking,
    private readonly opts: NbdServerOptions = {},
  ) {
    this.exportName = opts.exportName ?? '';
    this.replyBudget = new ReplyBudget(opts.maxReplyBytes ?? 256 * 1024 * 1024);
    this.writeBudget = new ReplyBudget(256 * 1024 * 1024);
  }

  /** The URI clients connect to (after listen). */
  get uri(): string {
    if (this.listenedUri === null) throw new NbdError('NBD_NOT_LISTENING', 'the server is not listening');
    return this.listenedUri;
  }

  /** The URI scheme says nbds only when plaintext clients are refused. */
  private get tlsRequired(): boolean {
    return this.opts.tls?.mode === 'require';
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Start listening; resolves with the URI to connect to. */
  async listen(endpoint: NbdEndpoint): Promise<string> {
    if (this.server !== null) throw new NbdError('NBD_ALREADY_LISTENING', 'the server is already listening');
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    server.on('error', (e) => this.opts.log?.(`nbd: listener error: ${e.message}`));
    server.maxConnections = this.opts.maxConnections ?? 128;
    if ('socketPath' in endpoint) {
      await removeStaleSocket(endpoint.socketPath);
      await listenOn(server, { path: endpoint.socketPath });
      this.socketPath = endpoint.socketPath;
      this.listenedUri = formatNbdUri({ kind: 'unix', socketPath: endpoint.socketPath, exportName: this.exportName }, { tls: this.tlsRequired });
    } else {
      const host = endpoint.host ?? '127.0.0.1';
      await listenOn(server, { port: endpoint.port, host });
      const addr = server.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : endpoint.port;
      this.listenedUri = formatNbdUri({ kind: 'tcp', host, port, exportName: this.exportName }, { tls: this.tlsRequired });
    }
    this.server = server;
    return this.listenedUri;
  }

  /** Stop accepting, let in-flight requests finish, disconnect everyone, flush and close the backing. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.shuttingDown = true;
    const server = this.server;
    const stopped = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    await Promise.all(
      [...this.connections].map(async (c) => {
        if (c.transmission !== null) await c.transmission.drain();
        c.socket.destroy();
        await c.done;
      }),
    );
    await stopped;
    if (this.socketPath !== null) await unlink(this.socketPath).catch(() => undefined);
    try {
      if (!this.backing.readOnly && this.backing.canFlush) await this.backing.flush();
    } finally {
      await this.backing.close();
    }
  }

  /** Serve a connection accepted elsewhere (e.g. handed over by a parent process); the socket may be paused. */
  serveSocket(socket: Socket): void {
    this.accept(socket);
  }

  private accept(socket: Socket): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    if (!this.admitPeer(socket)) return;
    const conn: Connection = { socket, transmission: null, done: Promise.resolve() };
    this.connections.add(conn);
    // Tracked until the socket is really closed, so close() can always reach it.
    socket.once('close', () => {
      this.connections.delete(conn);
      // Once the connection's requests have settled, so the reply buffers it held are back in the pool or freed.
      const release = (): void => (this.connections.size === 0 ? releaseIdleMemory() : returnFreedMemory());
      void conn.done.then(release, release);
    });
    conn.done = this.serve(conn);
  }

  /** Count the connection against its peer's cap, or refuse it (closed before the greeting). */
  private admitPeer(socket: Socket): boolean {
    const peer = peerKey(socket);
    const open = this.perPeer.get(peer) ?? 0;
    const cap = this.opts.maxConnectionsPerPeer ?? DEFAULT_MAX_CONNECTIONS_PER_PEER;
    if (open >= cap) {
      this.opts.log?.(`nbd: connection refused: ${peer} already holds ${open} connections (the per-peer limit)`);
      socket.destroy();
      return false;
    }
    this.perPeer.set(peer, open + 1);
    socket.once('close', () => {
      const n = (this.perPeer.get(peer) ?? 1) - 1;
      if (n > 0) this.perPeer.set(peer, n);
      else this.perPeer.delete(peer);
    });
    return true;
  }

  private async serve(conn: Connection): Promise<void> {
    // Errors surface through ByteReader as rejections; this listener only keeps them from being "unhandled".
    conn.socket.on('error', () => undefined);
    // Read-ahead only: a read of a larger payload still gets all of it; payloads held are bounded by the write budgets.
    const highWater = 1024 * 1024;
    const timeout = setTimeout(() => {
      this.opts.log?.('nbd: handshake timed out');
      conn.socket.destroy();
    }, this.opts.handshakeTimeoutMs ?? 30_000);
    const tls = this.opts.tls;
    try {
      const { session, socket, reader } = await negotiate(
        conn.socket,
        new ByteReader(conn.socket, highWater),
        { name: this.exportName, backing: this.backing },
        tls === undefined
          ? null
          : {
              mode: tls.mode,
              credentials: tls.credentials,
              highWater,
              onUpgrade: (tlsSocket) => {
                tlsSocket.on('error', () => undefined);
                tlsSocket.once('close', () => this.connections.delete(conn));
                conn.socket = tlsSocket;
              },
            },
      );
      clearTimeout(timeout);
      if (session === null) {
        socket.destroySoon(); // NBD_OPT_ABORT: acknowledged, now close
        return;
      }
      conn.transmission = new Transmission(
        socket,
        reader,
        this.backing,
        session,
        {
          maxInFlight: this.opts.maxInFlight ?? 16,
          maxQueuedReplyBytes: this.opts.maxQueuedReplyBytes ?? 2 * 1024 * 1024,
          serverBudget: this.replyBudget,
          serverWriteBudget: this.writeBudget,
          idleTimeoutMs: this.opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
        },
        () => this.shuttingDown,
        this.opts.log,
      );
      await conn.transmission.run();
      socket.destroySoon(); // after DISC: replies flushed, then close
    } catch (e) {
      if (!this.shuttingDown) this.opts.log?.(`nbd: connection dropped: ${(e as Error)?.message ?? String(e)}`);
      conn.socket.destroy();
    } finally {
      clearTimeout(timeout);
    }
  }
}

function listenOn(server: Server, options: { path: string } | { port: number; host: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(new NbdError('NBD_LISTEN_FAILED', `cannot listen: ${e.message}`, { cause: e }));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Remove a socket file left by a dead server; refuse anything else at that path. */
export async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (st === null) return;
  if (!st.isSocket()) throw new NbdError('NBD_SOCKET_EXISTS', `${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new NbdError('NBD_SOCKET_EXISTS', `a server is already listening on ${path}`);
  await unlink(path);
}
