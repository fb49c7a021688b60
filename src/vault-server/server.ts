/**
 * `vhdcrypt vault serve`: the vault as a service, over HTTPS only. Two faces on one port:
 *  - identity, as Microsoft Entra's v2.0 endpoints for the client-credentials grant (RFC 6749 §4.4): the OpenID
 *    configuration MSAL reads first, the token endpoint, and the token-signing keys;
 *  - Key Vault's data plane (data-plane.ts), behind Bearer tokens: a request without a valid one gets 401 and a
 *    challenge naming the authority and the resource before its body is read, as Key Vault answers the SDK's
 *    first (bodiless) request.
 * The process holds the master key; callers only ever hold their own credentials.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { VaultError, openVault } from '../vault/index.js';
import { LocalVault } from '../vault/local/local-vault.js';
import { TokenAuthority, MAX_TOKEN_LIFETIME_S } from './access-tokens.js';
import { AuthLimiter, DEFAULT_AUTH_LIMITS, type AuthLimits } from './auth-limiter.js';
import { dataPlane, type RouteInfo } from './data-plane.js';
import { serverTlsMaterial, type TlsFiles } from './tls-material.js';
import { WireError, errorBody, wireErrorOf } from './wire.js';

/** Largest request body read (Key Vault refuses larger ones with 413). */
export const MAX_BODY_BYTES = 64 * 1024;
// api-version forms accepted: 7.x, 7.x-preview(.N), and dates (YYYY-MM-DD, optionally -preview).
const API_VERSION_RE = /^(?:7\.\d{1,2}(?:-preview(?:\.\d{1,3})?)?|\d{4}-\d{2}-\d{2}(?:-preview(?:\.\d{1,3})?)?)$/;
// A Host header as a client sends it: a name or an IPv4 address, or a bracketed IPv6 address, and a port.
const HOST_RE = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;
const TENANT_RE = /^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/;
const DATA_ROOTS = new Set(['secrets', 'deletedsecrets', 'keys', 'deletedkeys', 'rng']);
const SHUTDOWN_GRACE_MS = 10_000;
// Purge objects whose soft-delete retention has ended this often (Key Vault purges them on its own).
const PURGE_SWEEP_MS = 3_600_000;

export interface VaultServerOptions {
  /** Vault URI (file:<dir>); default the embedded vault. */
  readonly vault?: string;
  readonly passphrase?: string;
  readonly host?: string;
  readonly port?: number;
  /** Serve these instead of generated certificates. */
  readonly tls?: TlsFiles;
  /** Tenant id the identity endpoints answer for (default: the vault's id as a UUID). */
  readonly tenantId?: string;
  /** Access token lifetime, 1..3600 s (default 3600). */
  readonly tokenLifetimeS?: number;
  readonly authLimits?: AuthLimits;
  /** Server-side problems (never a secret). */
  readonly log?: (line: string) => void;
}

export interface RunningVaultServer {
  /** https://HOST:PORT, the vault URL and the authority host. */
  readonly url: string;
  readonly tenantId: string;
  /** The CA certificate to trust (or the given server certificate). */
  readonly caPath: string;
  readonly caSha256: string;
  /** Stop accepting, finish requests in flight, close the vault. */
  close(): Promise<void>;
}

function usage(message: string): VaultError {
  return new VaultError('VAULT_BAD_ARGUMENT', message);
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new WireError(400, 'BadParameter', 'The request path is not valid percent-encoding.');
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-cache',
    'x-ms-request-id': randomUUID(),
    'x-content-type-options': 'nosniff',
    'strict-transport-security': 'max-age=31536000;includeSubDomains',
    ...headers,
  });
  res.end(payload);
}

function sendError(res: ServerResponse, e: WireError): void {
  send(res, e.status, errorBody(e), { 'x-ms-error-code': e.code, ...e.headers });
}

/** The request body, at most `limit` bytes; a larger one is refused with 413 before or while it is read. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new WireError(413, 'RequestEntityTooLarge', `The request body is larger than ${limit} bytes.`, undefined, { connection: 'close' }));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      total += c.length;
      if (total > limit) {
        done = true;
        for (const x of chunks) x.fill(0);
        // Stop reading: the reply closes the connection.
        req.pause();
        reject(new WireError(413, 'RequestEntityTooLarge', `The request body is larger than ${limit} bytes.`, undefined, { connection: 'close' }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      const all = Buffer.concat(chunks);
      for (const x of chunks) x.fill(0);
      resolve(all);
    });
    req.on('error', (e) => {
      if (!done) {
        done = true;
        reject(e);
      }
    });
    // A client that goes away mid-body: nothing waits for an end that will not come, nothing is kept.
    req.on('close', () => {
      if (!done) {
        done = true;
        for (const x of chunks) x.fill(0);
        reject(new WireError(400, 'BadParameter', 'The request body ended early.'));
      }
    });
  });
}

function parseJson(body: Buffer): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    throw new WireError(400, 'BadParameter', 'The request body is not valid JSON.');
  } finally {
    // Bodies carry secret values and key material.
    body.fill(0);
  }
}

/** Start serving; resolves once listening. */
export async function startVaultServer(o: VaultServerOptions = {}): Promise<RunningVaultServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? 8443;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw usage(`port must be 0-65535, not ${port}`);
  if (o.tenantId !== undefined && !TENANT_RE.test(o.tenantId)) throw usage('--tenant takes a tenant id (a UUID or a name of letters, digits, . and -)');
  const lifetime = o.tokenLifetimeS ?? MAX_TOKEN_LIFETIME_S;
  if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > MAX_TOKEN_LIFETIME_S) throw usage(`the token lifetime is 1-${MAX_TOKEN_LIFETIME_S} seconds`);
  const log = o.log ?? ((line: string): void => void process.stderr.write(`vhdcrypt vault serve: ${line}\n`));

  const opened = await openVault(o.vault, { create: false, ...(o.passphrase !== undefined ? { passphrase: o.passphrase } : {}) });
  if (!(opened instanceof LocalVault)) {
    await opened.close();
    throw new VaultError('VAULT_UNSUPPORTED_PROVIDER', 'vault serve serves an embedded (file:) vault');
  }
  const root = opened;
  try {
    const vaultDir = root.uri.slice('file:'.length);
    const serverDir = join(vaultDir, 'server');
    const tls = await serverTlsMaterial(vaultDir, host, o.tls);
    const authority = new TokenAuthority(serverDir);
    const limiter = new AuthLimiter(o.authLimits ?? DEFAULT_AUTH_LIMITS);
    const tenantId = (o.tenantId ?? root.tenantId).toLowerCase();

    const server: Server = createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
      handle(req, res).catch((e: unknown) => {
        log(`internal error: ${(e as Error)?.message ?? String(e)}`);
        if (!res.headersSent) sendError(res, new WireError(500, 'InternalServerError', 'The vault could not complete the request.'));
        else res.destroy();
      });
    });
    tls.key.fill(0);
    // Bound what a peer can hold open: slow headers, slow bodies, idle keep-alive connections, connections.
    server.headersTimeout = 20_000;
    server.requestTimeout = 60_000;
    server.keepAliveTimeout = 30_000;
    server.maxHeadersCount = 100;
    server.maxConnections = 1024;
    // A plain-HTTP (or otherwise non-TLS) client fails its handshake; it gets nothing and is dropped.
    server.on('tlsClientError', (_e: Error, socket: Socket) => socket.destroy());

    const identity = async (req: IncomingMessage, res: ServerResponse, seg: string[], origin: string): Promise<void> => {
      const address = req.socket.remoteAddress ?? '?';
      const oauthError = (status: number, error: string, description: string, headers: Record<string, string> = {}): void =>
        send(res, status, { error, error_description: description, error_codes: [], timestamp: new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z', trace_id: randomUUID(), correlation_id: randomUUID() }, headers);
      const tenant = seg[0]!.toLowerCase();
      if (tenant !== tenantId) {
        oauthError(400, 'invalid_tenant', `AADSTS90002: Tenant '${seg[0]!.slice(0, 64)}' not found. This server serves tenant ${tenantId}.`);
        return;
      }
      const rest = seg.slice(1).join('/');
      const base = `${origin}/${tenantId}`;
      if (rest === 'v2.0/.well-known/openid-configuration' && req.method === 'GET') {
        send(res, 200, {
          issuer: `${base}/v2.0`,
          token_endpoint: `${base}/oauth2/v2.0/token`,
          authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
          end_session_endpoint: `${base}/oauth2/v2.0/logout`,
          jwks_uri: `${base}/discovery/v2.0/keys`,
          token_endpoint_auth_methods_supported: ['client_secret_post'],
          grant_types_supported: ['client_credentials'],
          response_types_supported: ['token'],
          id_token_signing_alg_values_supported: ['ES256'],
          tenant_region_scope: null,
        });
        return;
      }
      if (rest === 'discovery/v2.0/keys' && req.method === 'GET') {
        send(res, 200, authority.jwks());
        return;
      }
      if (rest !== 'oauth2/v2.0/token') {
        oauthError(404, 'not_found', 'This identity endpoint serves only the OpenID configuration, the signing keys and the client-credentials token endpoint.');
        return;
      }
      if (req.method !== 'POST') {
        oauthError(405, 'invalid_request', 'AADSTS900561: The endpoint only accepts POST requests.');
        return;
      }
      const raw = await readBody(req, 16 * 1024);
      const form = new URLSearchParams(raw.toString('utf8'));
      raw.fill(0);
      const clientId = form.get('client_id') ?? '';
      const wait = limiter.retryAfter(clientId, address);
      if (wait > 0) {
        oauthError(429, 'temporarily_unavailable', 'AADSTS50196: Too many failed client authentications; retry later.', { 'retry-after': String(wait) });
        return;
      }
      if (form.get('grant_type') !== 'client_credentials') {
        oauthError(400, 'unsupported_grant_type', 'AADSTS70003: This server supports only grant_type=client_credentials.');
        return;
      }
      if (clientId === '') {
        oauthError(400, 'invalid_request', "AADSTS900144: The request body must contain the following parameter: 'client_id'.");
        return;
      }
      const scope = form.get('scope') ?? '';
      const resource = /^(https:\/\/[^/\s]+)\/\.default$/.exec(scope.split(' ').find((s) => s.endsWith('/.default')) ?? '')?.[1];
      if (resource === undefined) {
        oauthError(400, 'invalid_scope', `AADSTS70011: The provided value for scope ${JSON.stringify(scope.slice(0, 200))} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`);
        return;
      }
      const secret = form.get('client_secret') ?? '';
      const found = secret === '' ? null : root.verifyClientCredentials(clientId, secret);
      const auditedId = /^[0-9a-fA-F-]{36}$/.test(clientId) ? clientId : '?';
      if (found === null) {
        limiter.fail(clientId, address);
        await root.auditServerEvent({ principal: auditedId, operation: 'getToken', objectId: root.uri, result: 'VAULT_UNAUTHENTICATED', client: address });
        oauthError(401, 'invalid_client', `AADSTS7000215: Invalid client secret provided for application '${auditedId}'.`);
        return;
      }
      const { token, expiresIn } = authority.issue({
        aud: resource, iss: `${base}/v2.0`, tid: tenantId, appid: clientId.toLowerCase(), oid: found.principal, sub: clientId.toLowerCase(), ctag: found.credentialTag,
      }, lifetime);
      await root.auditServerEvent({ principal: found.principal, operation: 'getToken', objectId: root.uri, result: 'ok', client: address });
      send(res, 200, { token_type: 'Bearer', expires_in: expiresIn, ext_expires_in: expiresIn, access_token: token });
    };

    const challenge = (res: ServerResponse, origin: string, message: string, error?: string): void => {
      const e = new WireError(401, 'Unauthorized', message, undefined, {
        'www-authenticate': `Bearer authorization="${origin}/${tenantId}", resource="${origin}"${error ? `, error="${error}"` : ''}`,
      });
      sendError(res, e);
    };

    async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const method = req.method ?? 'GET';
      const hostHeader = req.headers.host;
      if (hostHeader === undefined || !HOST_RE.test(hostHeader)) {
        sendError(res, new WireError(400, 'BadParameter', 'The Host header is missing or malformed.', undefined, { connection: 'close' }));
        return;
      }
      const origin = `https://${hostHeader.toLowerCase()}`;
      const url = req.url ?? '/';
      if (!url.startsWith('/')) {
        sendError(res, new WireError(400, 'BadParameter', 'The request target must be a path.'));
        return;
      }
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      // URLSearchParams decodes names too: the SDK sends api-version as api%2Dversion.
      const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
      let info: RouteInfo = { kind: null, write: false };
      try {
        const seg = path.split('/').slice(1).map(decodeSegment);
        const top = seg[0]?.toLowerCase() ?? '';
        if (!DATA_ROOTS.has(top) && seg.length >= 2 && ['v2.0', 'oauth2', 'discovery'].includes(seg[1]!.toLowerCase())) {
          await identity(req, res, seg, origin);
          return;
        }
        // Authentication first, before the body is read (the SDK's first request is sent without one).
        const auth = req.headers.authorization;
        const large = req.headers['content-length'] !== undefined && Number(req.headers['content-length']) > MAX_BODY_BYTES;
        if (large || req.headers['transfer-encoding'] !== undefined) res.setHeader('connection', 'close');
        if (auth === undefined || auth === '') {
          challenge(res, origin, 'AKV10000: Request is missing a Bearer or PoP token.');
          return;
        }
        const m = /^Bearer\s+(\S+)$/i.exec(auth);
        const check = m ? authority.check(m[1]!, origin) : ({ ok: false, reason: 'malformed' } as const);
        if (!check.ok) {
          const message = check.reason === 'expired' ? 'AKV10032: Token expired.'
            : check.reason === 'audience' ? `AKV10022: Invalid audience. Expected ${origin}.`
              : 'AKV10000: Request is missing a valid Bearer token.';
          challenge(res, origin, message, 'invalid_token');
          return;
        }
        if (check.claims.tid !== tenantId) {
          challenge(res, origin, `AKV10032: Invalid issuer. Expected tenant ${tenantId}.`, 'invalid_token');
          return;
        }
        const apiVersion = query.get('api-version');
        if (apiVersion === null || apiVersion === '') throw new WireError(400, 'BadParameter', 'The request is missing the api-version query parameter.');
        if (!API_VERSION_RE.test(apiVersion)) throw new WireError(400, 'BadParameter', `The specified version (${apiVersion.slice(0, 32)}) is not recognized. Use 7.x or a date such as 2025-07-01.`);
        const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? parseJson(await readBody(req, MAX_BODY_BYTES)) : undefined;
        const vault = root.actingAs(check.claims.oid, check.claims.ctag, req.socket.remoteAddress ?? '?');
        const reply = await dataPlane({ method, seg, query, origin, apiVersion, body, vault }, info = { kind: null, write: false });
        send(res, reply.status, reply.body);
      } catch (e) {
        if (e instanceof WireError) {
          sendError(res, e);
          return;
        }
        if (e instanceof VaultError) {
          if (e.code === 'VAULT_UNAUTHENTICATED') {
            // The token's principal was removed or given new credentials since it was issued.
            challenge(res, origin, `AKV10000: ${e.message}`, 'invalid_token');
            return;
          }
          const w = wireErrorOf(e.code, e.message, info.kind, info.write);
          if (w.status === 500) log(`${e.code}: ${e.message}`);
          sendError(res, w);
          return;
        }
        throw e;
      }
    }

    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new VaultError('VAULT_SERVER_LISTEN', `cannot listen on ${host}:${port}: ${e.code ?? e.message}`, { cause: e })));
      server.listen(port, host, () => resolve());
    });
    const addr = server.address();
    const actualPort = typeof addr === 'object' && addr !== null ? addr.port : port;
    const url = `https://${host.includes(':') ? `[${host}]` : host}:${actualPort}`;
    const sweep = setInterval(() => {
      try {
        root.purgeExpiredDeleted();
      } catch (e) {
        log(`purging expired deleted objects failed: ${(e as Error).message}`);
      }
    }, PURGE_SWEEP_MS);
    sweep.unref();

    let closing: Promise<void> | null = null;
    return {
      url,
      tenantId,
      caPath: tls.caPath,
      caSha256: tls.fingerprint,
      close: () => (closing ??= (async () => {
        clearInterval(sweep);
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
        try {
          await closed;
        } finally {
          clearTimeout(force);
          await root.close();
        }
      })()),
    };
  } catch (e) {
    await root.close();
    throw e;
  }
}
