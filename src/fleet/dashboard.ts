/**
 * `vhdcrypt fleet dashboard`: a read-only page of the queue (jobs by state, a progress bar per running job,
 * throughput over time, failures with their codes), updated live over server-sent events. node:http, no
 * framework. It listens on loopback only: job paths and failures are not for the network, and a Host header
 * other than the address it listens on is refused (a page elsewhere cannot reach it by DNS rebinding).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { FleetError } from './errors.js';
import { createFleet, type FleetStatus } from './fleet.js';
import type { FleetConnection } from './connection.js';
import { APP_JS, PAGE_HTML } from './dashboard-page.js';

export interface DashboardOptions {
  readonly connection: FleetConnection;
  readonly queue?: string;
  /** Loopback address (default 127.0.0.1). */
  readonly host?: string;
  /** Port (default 7070; 0 picks a free one). */
  readonly port?: number;
  /** How often the queue is read and the page updated (default 1000 ms). */
  readonly intervalMs?: number;
}

export interface Dashboard {
  readonly url: string;
  close(): Promise<void>;
}

/** Samples of throughput kept for the chart (at the default interval, the last five minutes). */
const HISTORY = 300;
/** Page viewers at once: each holds an open response. */
const MAX_CLIENTS = 32;

export function isLoopback(host: string): boolean {
  return host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '::1';
}

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const host = opts.host ?? '127.0.0.1';
  if (!isLoopback(host)) throw new FleetError('FLEET_BAD_ARGUMENT', `the dashboard listens on loopback only (127.0.0.1, ::1, localhost), not ${host}; reach it from elsewhere through an SSH tunnel`);
  const port = opts.port ?? 7070;
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new FleetError('FLEET_BAD_ARGUMENT', `port expected 0-65535, got ${port}`);
  const intervalMs = opts.intervalMs ?? 1000;
  const fleet = await createFleet({ connection: opts.connection, ...(opts.queue !== undefined ? { queue: opts.queue } : {}) });
  const history: { at: number; bytesPerSecond: number }[] = [];
  let latest: { status: FleetStatus; history: typeof history } | null = null;
  const clients = new Set<ServerResponse>();
  let sampling = false;

  async function sample(): Promise<void> {
    if (sampling) return;
    sampling = true;
    try {
      const status = await fleet.status();
      history.push({ at: status.at, bytesPerSecond: status.bytesPerSecond });
      if (history.length > HISTORY) history.shift();
      latest = { status, history };
      const line = `data: ${JSON.stringify(latest)}\n\n`;
      for (const c of clients) c.write(line);
    } catch {
      // Redis away (restarting): the page keeps its last picture and says nothing new until it is back.
    } finally {
      sampling = false;
    }
  }
  await sample();
  const timer = setInterval(() => void sample(), intervalMs);

  let allowedHosts: Set<string> = new Set();
  const send = (res: ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    });
    res.end(body);
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (!allowedHosts.has(req.headers.host ?? '')) return send(res, 421, 'text/plain', 'unknown host\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'read-only\n');
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/') return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
    if (path === '/app.js') return send(res, 200, 'text/javascript; charset=utf-8', APP_JS);
    if (path === '/api/status') return send(res, 200, 'application/json', JSON.stringify(latest));
    if (path === '/events') {
      if (clients.size >= MAX_CLIENTS) return send(res, 503, 'text/plain', 'too many viewers\n');
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
      res.write('retry: 2000\n\n');
      if (latest) res.write(`data: ${JSON.stringify(latest)}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
      return;
    }
    send(res, 404, 'text/plain', 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new FleetError('FLEET_LISTEN_FAILED', `cannot listen on ${host}:${port}: ${e.message}`, { cause: e })));
    server.listen(port, host, () => resolve());
  }).catch(async (e) => {
    clearInterval(timer);
    await fleet.close();
    throw e;
  });
  const bound = (server.address() as { port: number }).port;
  const shown = isIP(host) === 6 ? `[${host}]` : host;
  allowedHosts = new Set([`${shown}:${bound}`, `localhost:${bound}`, `127.0.0.1:${bound}`, `[::1]:${bound}`]);
  return {
    url: `http://${shown}:${bound}/`,
    async close() {
      clearInterval(timer);
      for (const c of clients) c.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fleet.close();
    },
  };
}
