/**
 * npm run bench:vault [-- --duration S] [--runs N] [--connections C] [--tool autocannon|wrk] [--json]
 * `vhdcrypt vault serve` under load: C (default 64) keep-alive connections, tokens obtained first, the two
 * workloads alternated run by run (medians of N):
 *  - secret GET (`GET /secrets/bench?api-version=7.5`): requests/s and p99 latency;
 *  - RSA-2048 unwrapKey with RSA-OAEP-256 (`POST /keys/kek/<version>/unwrapkey`): requests/s and p99;
 * and the server's peak RSS (VmHWM) over the whole run. Key Vault's published limits are printed beside them
 * (learn.microsoft.com/azure/key-vault/general/service-limits: per vault per 10 s, secrets 4,000 transactions,
 * RSA-2048 software-key operations 4,000; HSM-protected RSA-2048 2,000).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { openVault } from '../src/vault/index.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const json = process.argv.includes('--json');
const duration = Number(arg('--duration', '10'));
const runs = Number(arg('--runs', '3'));
const connections = Number(arg('--connections', '64'));
const tool = arg('--tool', 'autocannon');
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.cjs');
const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-vault-bench-'));

/** Key Vault's published per-vault limits (transactions per 10 s), for comparison. */
const KEY_VAULT_LIMITS = { secretsPer10s: 4000, rsa2048SoftwarePer10s: 4000, rsa2048HsmPer10s: 2000 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** CPU seconds (user + system) a process has used so far (/proc/PID/stat fields 14 and 15, in clock ticks). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function startServer(vaultDir: string): Promise<{ child: ChildProcess; url: string; tenantId: string; ca: string }> {
  const child = spawn(process.execPath, [cli, 'vault', 'serve', '--vault', `file:${vaultDir}`, '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const shown = await new Promise<{ url: string; tenantId: string; caPath: string }>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      try {
        resolve(JSON.parse(out) as { url: string; tenantId: string; caPath: string });
      } catch {
        // Not the whole object yet.
      }
    });
    child.once('exit', (code) => reject(new Error(`vault serve exited (${code})`)));
  });
  return { child, url: shown.url, tenantId: shown.tenantId, ca: readFileSync(shown.caPath, 'utf8') };
}

function post(url: string, ca: string, body: string, contentType: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, headers: { 'content-type': contentType } }, (res) => {
      let t = '';
      res.setEncoding('utf8').on('data', (d: string) => (t += d)).on('end', () => (res.statusCode === 200 ? resolve(t) : reject(new Error(`${res.statusCode}: ${t}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface Load { rps: number; p99: number; errors: number; /** requests per CPU-second of the server: what the figure would be with a core to itself */ perCpuSecond?: number }

async function loadAutocannon(url: string, token: string, method: 'GET' | 'POST', body?: string): Promise<Load> {
  const r = await autocannon({
    url, connections, duration, method, body,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
  });
  return { rps: r.requests.average, p99: r.latency.p99, errors: r.non2xx + r.errors + r.timeouts };
}

function loadWrk(url: string, token: string, method: 'GET' | 'POST', body?: string): Load {
  const script = join(dir, 'wrk.lua');
  writeFileSync(script, [
    `wrk.method = "${method}"`,
    `wrk.headers["authorization"] = "Bearer ${token}"`,
    ...(body ? [`wrk.headers["content-type"] = "application/json"`, `wrk.body = '${body}'`] : []),
    'done = function(summary, latency, requests)',
    '  io.write(string.format("RESULT %f %f %d\\n", summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))',
    'end',
  ].join('\n'));
  const r = spawnSync('wrk', ['-t2', `-c${connections}`, `-d${duration}s`, '-s', script, url], { encoding: 'utf8' });
  const m = /RESULT ([\d.]+) ([\d.]+) (\d+)/.exec(r.stdout);
  if (!m) throw new Error(`wrk: ${r.stderr || r.stdout}`);
  return { rps: Number(m[1]), p99: Number(m[2]), errors: Number(m[3]) };
}

async function main(): Promise<void> {
  const vaultDir = join(dir, 'vault');
  const owner = await openVault(`file:${vaultDir}`, { create: true, exclusive: true, passphrase: '' });
  let clientId: string;
  let clientSecret: string;
  let kekVersion: string;
  let wrapped: Buffer;
  try {
    await owner.setSecret('bench', randomBytes(48).toString('base64'));
    const kek = await owner.createKey('kek', { kty: 'RSA', size: 2048 });
    kekVersion = kek.properties.version;
    const pub = createPublicKey({ key: { kty: 'RSA', n: kek.key.n!, e: kek.key.e! }, format: 'jwk' });
    wrapped = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(32));
    const p = await owner.addPrincipal('bench');
    await owner.setAccessPolicy('bench', { secrets: ['get'], keys: ['unwrapKey'] });
    clientId = p.clientId!;
    clientSecret = p.clientSecret!;
  } finally {
    await owner.close();
  }
  const server = await startServer(vaultDir);
  try {
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret, scope: `${server.url}/.default` }).toString();
    const token = (JSON.parse(await post(`${server.url}/${server.tenantId}/oauth2/v2.0/token`, server.ca, form, 'application/x-www-form-urlencoded')) as { access_token: string }).access_token;
    const secretUrl = `${server.url}/secrets/bench?api-version=7.5`;
    const unwrapUrl = `${server.url}/keys/kek/${kekVersion}/unwrapkey?api-version=7.5`;
    const unwrapBody = JSON.stringify({ alg: 'RSA-OAEP-256', value: wrapped.toString('base64url') });
    const pid = server.child.pid!;
    const load = async (u: string, m: 'GET' | 'POST', b?: string): Promise<Load> => {
      const cpu0 = cpuSeconds(pid);
      const r = tool === 'wrk' ? loadWrk(u, token, m, b) : await loadAutocannon(u, token, m, b);
      return { ...r, perCpuSecond: (r.rps * duration) / Math.max(cpuSeconds(pid) - cpu0, 1e-3) };
    };
    const secret: Load[] = [];
    const unwrap: Load[] = [];
    for (let i = 0; i < runs; i++) {
      // Alternated, so that a change in the machine's load falls on both workloads alike.
      secret.push(await load(secretUrl, 'GET'));
      unwrap.push(await load(unwrapUrl, 'POST', unwrapBody));
      if (!json) {
        process.stderr.write(`run ${i + 1}/${runs}: secret GET ${secret[i]!.rps.toFixed(0)}/s p99 ${secret[i]!.p99} ms (${secret[i]!.perCpuSecond!.toFixed(0)} per server CPU-s); `
          + `unwrapKey ${unwrap[i]!.rps.toFixed(0)}/s p99 ${unwrap[i]!.p99} ms (${unwrap[i]!.perCpuSecond!.toFixed(0)} per server CPU-s)\n`);
      }
    }
    const result = {
      tool, connections, durationS: duration, runs,
      secretGet: { perSecond: median(secret.map((x) => x.rps)), p99Ms: median(secret.map((x) => x.p99)), perServerCpuSecond: median(secret.map((x) => x.perCpuSecond!)), errors: secret.reduce((a, x) => a + x.errors, 0) },
      rsa2048Unwrap: { perSecond: median(unwrap.map((x) => x.rps)), p99Ms: median(unwrap.map((x) => x.p99)), perServerCpuSecond: median(unwrap.map((x) => x.perCpuSecond!)), errors: unwrap.reduce((a, x) => a + x.errors, 0) },
      serverPeakRssMiB: Number(peakRssMiB(server.child.pid!).toFixed(1)),
      keyVaultLimitsPerSecond: {
        secrets: KEY_VAULT_LIMITS.secretsPer10s / 10, rsa2048Software: KEY_VAULT_LIMITS.rsa2048SoftwarePer10s / 10, rsa2048Hsm: KEY_VAULT_LIMITS.rsa2048HsmPer10s / 10,
      },
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    };
    if (json) {
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    } else {
      const l = result.keyVaultLimitsPerSecond;
      process.stdout.write([
        `vault serve, ${connections} keep-alive connections, ${tool}, ${runs} x ${duration} s alternated, medians (load average ${result.loadAverage}):`,
        `  secret GET      ${result.secretGet.perSecond.toFixed(0)}/s, p99 ${result.secretGet.p99Ms} ms, ${result.secretGet.perServerCpuSecond.toFixed(0)} per server CPU-second   (Key Vault: ${l.secrets}/s per vault)`,
        `  RSA-2048 unwrap ${result.rsa2048Unwrap.perSecond.toFixed(0)}/s, p99 ${result.rsa2048Unwrap.p99Ms} ms, ${result.rsa2048Unwrap.perServerCpuSecond.toFixed(0)} per server CPU-second  (Key Vault: ${l.rsa2048Software}/s software keys, ${l.rsa2048Hsm}/s HSM)`,
        `  server peak RSS ${result.serverPeakRssMiB} MiB; failed requests ${result.secretGet.errors + result.rsa2048Unwrap.errors}`,
        '',
      ].join('\n'));
    }
  } finally {
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
