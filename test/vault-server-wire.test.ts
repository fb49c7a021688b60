/**
 * `vhdcrypt vault serve` on the wire, with raw HTTPS requests: the challenge, the token endpoint and its JWTs
 * (node:crypto verifies the signature with the published key), Key Vault's exact error bodies and headers,
 * api-version forms, paging links, body limits, malformed input, a non-TLS client, the audit log's client
 * address, and the rate limit on failed client authentications.
 */
import { createPublicKey, verify } from 'node:crypto';
import { request } from 'node:https';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { startVaultServer, type StartedVaultServer } from './helpers/vault-server.js';

let s: StartedVaultServer;
let port: number;
beforeAll(async () => {
  s = await startVaultServer();
  port = Number(new URL(s.url).port);
}, 90_000);
afterAll(async () => {
  await s?.stop();
});

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: () => any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

function call(method: string, path: string, o: { token?: string; body?: string | Buffer; headers?: Record<string, string>; host?: string } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (o.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    if (o.host !== undefined) headers.host = o.host;
    const req = request({ host: '127.0.0.1', port, method, path, ca: s.caPem, headers, servername: 'localhost', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

async function token(clientId: string, clientSecret: string, resource = s.url): Promise<Res> {
  const body = new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret, scope: `${resource}/.default` }).toString();
  return call('POST', `/${s.tenantId}/oauth2/v2.0/token`, { body, headers: { 'content-type': 'application/x-www-form-urlencoded' } });
}

let reader: { clientId: string; clientSecret: string; token: string };
beforeAll(async () => {
  const c = await s.addPrincipal('wire-reader', { secrets: ['get', 'list', 'set', 'delete'], keys: ['get', 'create', 'wrapKey'] });
  const r = await token(c.clientId, c.clientSecret);
  reader = { ...c, token: r.json().access_token };
}, 60_000);

describe('vault serve: identity', () => {
  test('the OpenID configuration MSAL reads names the token endpoint on this origin', async () => {
    const r = await call('GET', `/${s.tenantId}/v2.0/.well-known/openid-configuration`);
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({
      issuer: `${s.url}/${s.tenantId}/v2.0`, token_endpoint: `${s.url}/${s.tenantId}/oauth2/v2.0/token`, jwks_uri: `${s.url}/${s.tenantId}/discovery/v2.0/keys`,
    });
    expect((await call('GET', '/another-tenant/v2.0/.well-known/openid-configuration')).json().error).toBe('invalid_tenant');
  });

  test('client credentials give an ES256 JWT: signature (node:crypto), aud, iss, tid, appid, oid, at most an hour', async () => {
    const r = await token(reader.clientId, reader.clientSecret);
    expect(r.status).toBe(200);
    const t = r.json();
    expect(t).toMatchObject({ token_type: 'Bearer', expires_in: 3600, ext_expires_in: 3600 });
    const [h, p, sig] = (t.access_token as string).split('.');
    expect(JSON.parse(Buffer.from(h!, 'base64url').toString())).toMatchObject({ alg: 'ES256', typ: 'JWT' });
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    expect(claims).toMatchObject({ aud: s.url, iss: `${s.url}/${s.tenantId}/v2.0`, tid: s.tenantId, appid: reader.clientId, oid: 'wire-reader' });
    expect(claims.exp - claims.iat).toBeLessThanOrEqual(3600);
    const jwks = (await call('GET', `/${s.tenantId}/discovery/v2.0/keys`)).json();
    const key = createPublicKey({ key: jwks.keys[0], format: 'jwk' });
    expect(verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig!, 'base64url'))).toBe(true);
  });

  test('OAuth2 errors: unsupported grant, missing client id, bad scope', async () => {
    const form = (o: Record<string, string>): Promise<Res> => call('POST', `/${s.tenantId}/oauth2/v2.0/token`, { body: new URLSearchParams(o).toString(), headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect((await form({ grant_type: 'password', client_id: reader.clientId })).json().error).toBe('unsupported_grant_type');
    expect((await form({ grant_type: 'client_credentials' })).json().error).toBe('invalid_request');
    const scope = await form({ grant_type: 'client_credentials', client_id: reader.clientId, client_secret: reader.clientSecret, scope: 'openid' });
    expect(scope.status).toBe(400);
    expect(scope.json().error).toBe('invalid_scope');
  });
});

describe('vault serve: the data plane on the wire', () => {
  test('no token: 401 with the challenge, before the body is read', async () => {
    const r = await call('GET', '/secrets/x?api-version=7.5');
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe(`Bearer authorization="${s.url}/${s.tenantId}", resource="${s.url}"`);
    expect(r.headers['x-ms-error-code']).toBe('Unauthorized');
    expect(r.json()).toEqual({ error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } });
    // A PUT that announces a body and never sends it is answered at once: the server did not wait for the body.
    const early = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'PUT', path: '/secrets/x?api-version=7.5', ca: s.caPem, servername: 'localhost', agent: false,
        headers: { 'content-type': 'application/json', 'content-length': '1000' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
        req.destroy();
      });
      req.on('error', (e) => (e.message.includes('socket hang up') ? undefined : reject(e)));
      req.flushHeaders();
    });
    expect(early).toBe(401);
  });

  test('a forged or wrong-audience token is 401 invalid_token', async () => {
    const [h, p] = reader.token.split('.');
    const forged = `${h}.${p}.${Buffer.alloc(64, 1).toString('base64url')}`;
    const r = await call('GET', '/secrets/x?api-version=7.5', { token: forged });
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    const other = (await token(reader.clientId, reader.clientSecret, 'https://elsewhere.example')).json().access_token as string;
    expect((await call('GET', '/secrets/x?api-version=7.5', { token: other })).status).toBe(401);
  });

  test('api-version: 7.x, 7.x-preview.N and dates accepted (percent-encoded name too); others 400 BadParameter', async () => {
    await call('PUT', '/secrets/ver?api-version=7.5', { token: reader.token, body: JSON.stringify({ value: 'v' }) });
    for (const q of ['api-version=7.5', 'api%2Dversion=7.6-preview.2', 'api-version=2025-07-01', 'api-version=2026-04-01']) {
      expect((await call('GET', `/secrets/ver?${q}`, { token: reader.token })).status, q).toBe(200);
    }
    for (const q of ['api-version=banana', 'api-version=8', '', 'api-version=']) {
      const r = await call('GET', `/secrets/ver?${q}`, { token: reader.token });
      expect(r.status, q).toBe(400);
      expect(r.json().error.code).toBe('BadParameter');
    }
  });

  test('secret bundles: ids with 32-hex versions on the request origin, Unix-second times, latest with a trailing slash', async () => {
    const put = await call('PUT', '/secrets/shape?api-version=7.5', { token: reader.token, body: JSON.stringify({ value: 'v1', contentType: 'text/plain', tags: { a: 'b' }, attributes: { exp: 2000000000 } }) });
    expect(put.status).toBe(200);
    const b = put.json();
    expect(b.id).toMatch(new RegExp(`^${s.url}/secrets/shape/[0-9a-f]{32}$`));
    expect(b).toMatchObject({ value: 'v1', contentType: 'text/plain', tags: { a: 'b' }, attributes: { enabled: true, exp: 2000000000, recoverableDays: 90, recoveryLevel: 'Recoverable+Purgeable' } });
    expect(Number.isInteger(b.attributes.created)).toBe(true);
    expect(Math.abs(b.attributes.created - Date.now() / 1000)).toBeLessThan(600);
    const latest = await call('GET', '/secrets/shape/?api-version=7.5', { token: reader.token });
    expect(latest.json().id).toBe(b.id);
    const byHost = await call('GET', '/secrets/shape/?api-version=7.5', { token: (await token(reader.clientId, reader.clientSecret, `https://localhost:${port}`)).json().access_token, host: `localhost:${port}` });
    expect(byHost.json().id).toBe(b.id.replace(s.url, `https://localhost:${port}`));
  });

  test('error bodies: 404 SecretNotFound, 403 AccessDenied, 403 SecretDisabled, 409 ObjectIsDeletedButRecoverable', async () => {
    const nf = await call('GET', '/secrets/absent/?api-version=7.5', { token: reader.token });
    expect(nf.status).toBe(404);
    expect(nf.headers['x-ms-error-code']).toBe('SecretNotFound');
    expect(nf.json()).toEqual({ error: { code: 'SecretNotFound', message: expect.any(String) } });
    const forbidden = await call('POST', '/secrets/shape/backup?api-version=7.5', { token: reader.token });
    expect(forbidden.status).toBe(403);
    expect(forbidden.json()).toEqual({ error: { code: 'Forbidden', message: expect.stringMatching(/backup/), innererror: { code: 'AccessDenied' } } });
    const off = await call('PUT', '/secrets/off?api-version=7.5', { token: reader.token, body: JSON.stringify({ value: 'v', attributes: { enabled: false } }) });
    expect(off.status).toBe(200);
    const disabled = await call('GET', '/secrets/off?api-version=7.5', { token: reader.token });
    expect(disabled.status).toBe(403);
    expect(disabled.json().error).toMatchObject({ code: 'Forbidden', innererror: { code: 'SecretDisabled' } });
    expect((await call('DELETE', '/secrets/off?api-version=7.5', { token: reader.token })).status).toBe(200);
    const conflict = await call('PUT', '/secrets/off?api-version=7.5', { token: reader.token, body: JSON.stringify({ value: 'again' }) });
    expect(conflict.status).toBe(409);
    expect(conflict.json().error).toMatchObject({ code: 'Conflict', innererror: { code: 'ObjectIsDeletedButRecoverable' } });
    expect((await call('GET', '/secrets/off?api-version=7.5', { token: reader.token })).status).toBe(404);
  });

  test('paging: maxresults 1..25, nextLink absolute on the request origin, 400 outside', async () => {
    for (let i = 0; i < 4; i++) await call('PUT', `/secrets/pg${i}?api-version=7.5`, { token: reader.token, body: JSON.stringify({ value: 'v' }) });
    const first = (await call('GET', '/secrets?api-version=7.5&maxresults=2', { token: reader.token })).json();
    expect(first.value).toHaveLength(2);
    expect(first.value[0].value).toBeUndefined();
    expect(first.value[0].id).toMatch(new RegExp(`^${s.url}/secrets/[0-9A-Za-z-]+$`));
    expect(first.nextLink).toMatch(new RegExp(`^${s.url}/secrets\\?api-version=7\\.5&\\$skiptoken=2&maxresults=2$`));
    const second = (await call('GET', first.nextLink.slice(s.url.length), { token: reader.token })).json();
    expect(second.value[0].id).not.toBe(first.value[0].id);
    for (const n of ['0', '26', 'x']) expect((await call('GET', `/secrets?api-version=7.5&maxresults=${n}`, { token: reader.token })).status).toBe(400);
  });

  test('keys: a versionless double-slash wrapkey path, public part only', async () => {
    const created = await call('POST', '/keys/wkek/create?api-version=7.5', { token: reader.token, body: JSON.stringify({ kty: 'RSA', key_size: 2048 }) });
    expect(created.status).toBe(200);
    const k = created.json();
    expect(k.key).toMatchObject({ kty: 'RSA', key_ops: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'] });
    expect(k.key.d).toBeUndefined();
    expect(k.key.kid).toMatch(new RegExp(`^${s.url}/keys/wkek/[0-9a-f]{32}$`));
    const w = await call('POST', '/keys/wkek//wrapkey?api-version=7.5', { token: reader.token, body: JSON.stringify({ alg: 'RSA-OAEP-256', value: Buffer.alloc(32, 1).toString('base64url') }) });
    expect(w.status).toBe(200);
    expect(w.json().kid).toBe(k.key.kid);
    expect(Buffer.from(w.json().value, 'base64url')).toHaveLength(256);
    const bad = await call('POST', '/keys/wkek//wrapkey?api-version=7.5', { token: reader.token, body: JSON.stringify({ alg: 'RSA1_5', value: 'AAAA' }) });
    expect(bad.status).toBe(400);
    expect((await call('POST', '/keys/nokey/create?api-version=7.5', { token: reader.token, body: JSON.stringify({ kty: 'EC' }) })).json().error.code).toBe('BadParameter');
  });

  test('unknown route 404, wrong method 405, malformed JSON 400, body over 64 KiB 413 (declared and chunked)', async () => {
    expect((await call('GET', '/certificates/x?api-version=7.5', { token: reader.token })).status).toBe(404);
    expect((await call('GET', '/?api-version=7.5', { token: reader.token })).status).toBe(404);
    const put = await call('PUT', '/secrets/?api-version=7.5', { token: reader.token, body: '{}' });
    expect([404, 405]).toContain(put.status);
    expect((await call('POST', '/secrets/x/1234?api-version=7.5', { token: reader.token, body: '{}' })).status).toBe(405);
    const bad = await call('PUT', '/secrets/x?api-version=7.5', { token: reader.token, body: '{"value": ' });
    expect(bad.status).toBe(400);
    expect(bad.json().error.code).toBe('BadParameter');
    const huge = JSON.stringify({ value: 'x'.repeat(70 * 1024) });
    const big = await call('PUT', '/secrets/x?api-version=7.5', { token: reader.token, body: huge });
    expect(big.status).toBe(413);
    const chunked = await call('PUT', '/secrets/x?api-version=7.5', { token: reader.token, body: huge, headers: { 'transfer-encoding': 'chunked' } });
    expect(chunked.status).toBe(413);
    const tooLong = await call('PUT', '/secrets/x?api-version=7.5', { token: reader.token, body: JSON.stringify({ value: 'x'.repeat(11 * 1024) }) });
    expect(tooLong.status).toBe(400);
  });

  test('a client speaking plain HTTP to the TLS port gets no HTTP reply and is disconnected', async () => {
    const got = await new Promise<string>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => sock.write('GET /secrets/x?api-version=7.5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
      let data = '';
      sock.on('data', (d) => (data += d.toString('latin1')));
      sock.on('close', () => resolve(data));
      sock.on('error', () => undefined);
    });
    expect(got).not.toMatch(/HTTP\/1\.1 \d{3}/);
  });

  test('audit entries name the principal and the client address', async () => {
    await call('GET', '/secrets/shape?api-version=7.5', { token: reader.token });
    const v = await openVault(`file:${s.vaultDir}`, { passphrase: '' });
    try {
      const entries = await v.readAudit();
      const get = entries.filter((e) => e.operation === 'getSecret' && e.principal === 'wire-reader').at(-1);
      expect(get).toMatchObject({ client: '127.0.0.1', result: 'ok' });
      expect(entries.some((e) => e.operation === 'getToken' && e.principal === 'wire-reader' && e.client === '127.0.0.1')).toBe(true);
    } finally {
      await v.close();
    }
  });
});

describe('vault serve: failed client authentications are rate limited', () => {
  test('per client id: the sixth wrong secret within a minute is 429 with Retry-After, even with the right secret', async () => {
    const c = await s.addPrincipal('guessed', { secrets: ['get'] });
    for (let i = 0; i < 5; i++) expect((await token(c.clientId, `guessed.wrong${i}`)).status).toBe(401);
    const limited = await token(c.clientId, c.clientSecret);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // Another client id from the same address is still served (the address limit is higher).
    expect((await token(reader.clientId, reader.clientSecret)).status).toBe(200);
  });

  test('per address: many client ids failing from one address block the address', async () => {
    for (let i = 0; i < 20; i++) await token(`00000000-0000-0000-0000-0000000000${String(i).padStart(2, '0')}`, 'x.y');
    const r = await token(reader.clientId, reader.clientSecret);
    expect(r.status).toBe(429);
    expect(r.json().error).toBe('temporarily_unavailable');
  });
});
