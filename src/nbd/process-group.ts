/**
 * The parent side of `vhdcrypt serve --processes N`: forks N connection
 * children (connection-child.ts), each holding its own read-only backing, and
 * hands every accepted connection to the next child in turn.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import { isErrorCode } from '../error-codes.js';
import { VhdcryptError } from '../errors.js';
import { compiledModulePath } from '../package-root.js';
import { NbdError } from './errors.js';
import type { ChildInit, ConnectionLimits } from './connection-child.js';
import type { OpenExportOptions } from './open-export.js';
import { removeStaleSocket, type NbdEndpoint } from './server.js';
import { formatNbdUri } from './uri.js';

export interface ProcessGroupOptions {
  readonly processes: number;
  readonly path: string;
  readonly exportName: string;
  readonly options: OpenExportOptions;
  /** Idle timeout and per-peer cap, enforced by each child for the connections it serves (so per process). */
  readonly limits?: ConnectionLimits;
}

export class NbdProcessGroup {
  private readonly children: ChildProcess[] = [];
  private server: Server | null = null;
  private turn = 0;
  private socketPath: string | null = null;

  private constructor(private readonly opts: ProcessGroupOptions) {}

  /** Fork the children and wait until each has opened the image. */
  static async start(opts: ProcessGroupOptions): Promise<NbdProcessGroup> {
    const childFile = compiledModulePath('nbd', 'connection-child.js');
    if (childFile === undefined) throw new NbdError('NBD_CHILD_MISSING', 'cannot find the vhdcrypt package root to locate the connection child');
    if (!existsSync(childFile)) throw new NbdError('NBD_CHILD_MISSING', `${childFile} is missing; build the package first`);
    const g = new NbdProcessGroup(opts);
    try {
      await Promise.all(
        Array.from({ length: opts.processes }, () => {
          const child = fork(childFile, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'advanced' });
          g.children.push(child);
          return new Promise<void>((resolve, reject) => {
            child.on('message', (m: { kind: string; code?: string; message?: string }) => {
              if (m.kind === 'ready') resolve();
              if (m.kind === 'failed') {
                const code = m.code !== undefined && isErrorCode(m.code) ? m.code : 'NBD_CHILD_FAILED';
                reject(new VhdcryptError(code, m.message ?? 'a serve child failed'));
              }
            });
            child.once('exit', (code) => reject(new NbdError('NBD_CHILD_FAILED', `a serve child exited (${code}) while opening the image`)));
            const init: ChildInit = { kind: 'init', path: opts.path, exportName: opts.exportName, options: opts.options, limits: opts.limits ?? {} };
            child.send(init);
          });
        }),
      );
    } catch (e) {
      for (const c of g.children) c.kill('SIGKILL');
      throw e;
    }
    return g;
  }

  /** Listen and hand connections over; resolves with the URI. */
  async listen(endpoint: NbdEndpoint): Promise<string> {
    const server = createServer({ pauseOnConnect: true, noDelay: true }, (socket: Socket) => {
      const child = this.children[this.turn++ % this.children.length]!;
      child.send({ kind: 'conn' }, socket, { keepOpen: false }, () => socket.destroy());
    });
    if ('socketPath' in endpoint) await removeStaleSocket(endpoint.socketPath);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new NbdError('NBD_LISTEN_FAILED', `cannot listen: ${e.message}`, { cause: e })));
      server.listen('socketPath' in endpoint ? { path: endpoint.socketPath } : { port: endpoint.port, host: endpoint.host ?? '127.0.0.1' }, () => resolve());
    });
    this.server = server;
    if ('socketPath' in endpoint) {
      this.socketPath = endpoint.socketPath;
      return formatNbdUri({ kind: 'unix', socketPath: endpoint.socketPath, exportName: this.opts.exportName });
    }
    const addr = server.address();
    const port = typeof addr === 'object' && addr !== null ? addr.port : endpoint.port;
    return formatNbdUri({ kind: 'tcp', host: endpoint.host ?? '127.0.0.1', port, exportName: this.opts.exportName });
  }

  /** Stop accepting; each child finishes its requests, closes its image and exits. */
  async close(): Promise<void> {
    const server = this.server;
    if (server !== null) server.close();
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.send({ kind: 'close' });
            setTimeout(() => c.kill('SIGKILL'), 30_000).unref();
          }),
      ),
    );
    if (this.socketPath !== null) await unlink(this.socketPath).catch(() => undefined);
  }
}
