/**
 * A vault server killed (SIGKILL) while 8 clients write: after a restart on the same vault every write that was
 * acknowledged is there with its value, each has its audit entry, and the audit chain verifies.
 */
import { Agent, request } from 'node:https';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { startVaultServer } from './helpers/vault-server.js';

const WRITERS = 8;
// Acknowledged writes to wait for before the kill (an event, not a time).
const KILL_AFTER = 120;

const tempRoot = mkdtempSync(join(tmpdir(), 'vhdcrypt-vault-crash-'));
afterAll(() => rmSync(tempRoot, { recursive: true, force: true }));

interface Res { status: number; body: string }

function call(agent: Agent, url: string, method: string, path: string, token: string | null, body?: string, contentType = 'application/json'): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = contentType;
    const req = request(`${url}${path}`, { method, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

test('SIGKILL during 8 concurrent writers loses no acknowledged write and leaves a verifiable audit chain', async () => {
  const vaultDir = join(tempRoot, 'vault');
  const created = await openVault(`file:${vaultDir}`, { create: true, exclusive: true, passphrase: '' });
  await created.close();
  const s = await startVaultServer({ vaultDir });
  const { clientId, clientSecret } = await s.addPrincipal('writer', { secrets: ['get', 'set'] });
  const agent = new Agent({ keepAlive: true, ca: s.caPem, maxSockets: WRITERS });
  const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret, scope: `${s.url}/.default` }).toString();
  const tokenRes = await call(agent, s.url, 'POST', `/${s.tenantId}/oauth2/v2.0/token`, null, form, 'application/x-www-form-urlencoded');
  const token = (JSON.parse(tokenRes.body) as { access_token: string }).access_token;

  const acked: Array<{ id: string; value: string }> = [];
  let killed: Promise<unknown> | null = null;
  const writer = async (w: number): Promise<void> => {
    for (let n = 0; ; n++) {
      const value = `writer ${w} write ${n}`;
      let r: Res;
      try {
        r = await call(agent, s.url, 'PUT', `/secrets/w${w}-${n % 5}?api-version=7.5`, token, JSON.stringify({ value }));
      } catch {
        return; // The server is gone: this write was never acknowledged.
      }
      expect(r.status, r.body).toBe(200);
      acked.push({ id: (JSON.parse(r.body) as { id: string }).id, value });
      if (acked.length >= KILL_AFTER && killed === null) killed = s.stop('SIGKILL');
    }
  };
  await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  expect(await killed).toMatchObject({ signal: 'SIGKILL' });
  agent.destroy();
  expect(acked.length).toBeGreaterThanOrEqual(KILL_AFTER);

  const again = await startVaultServer({ vaultDir });
  const agent2 = new Agent({ keepAlive: true, ca: again.caPem });
  try {
    // The token outlives the restart (the signing key is kept in the vault directory); the origin changed with the port.
    const t2 = (JSON.parse((await call(agent2, again.url, 'POST', `/${again.tenantId}/oauth2/v2.0/token`, null, form.replace(encodeURIComponent(s.url), encodeURIComponent(again.url)), 'application/x-www-form-urlencoded')).body) as { access_token: string }).access_token;
    for (const a of acked) {
      const path = a.id.slice(s.url.length);
      const r = await call(agent2, again.url, 'GET', `${path}?api-version=7.5`, t2);
      expect(r.status, `${path}: ${r.body}`).toBe(200);
      expect((JSON.parse(r.body) as { value: string }).value).toBe(a.value);
    }
  } finally {
    agent2.destroy();
    expect((await again.stop()).code).toBe(0);
  }
  const v = await openVault(`file:${vaultDir}`, { passphrase: '' });
  try {
    // readAudit verifies the whole MAC chain and its sealed head (VAULT_TAMPERED otherwise).
    const entries = await v.readAudit();
    const recorded = new Set(entries.filter((e) => e.operation === 'setSecret' && e.result === 'ok').map((e) => e.objectId.slice(e.objectId.indexOf('/secrets/'))));
    for (const a of acked) expect(recorded.has(a.id.slice(s.url.length))).toBe(true);
  } finally {
    await v.close();
  }
}, 120_000);
