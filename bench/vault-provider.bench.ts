/**
 * node dist/bench/vault-provider.bench.js [--rounds N] [--size MiB] [--json]
 * The wall time a vault provider adds to a whole `vhdcrypt encrypt` (process start to exit, 16 MiB raw image of
 * random data into LUKS2): the https: provider (Azure Key Vault's SDKs, DefaultAzureCredential from the
 * environment, a token from the server's authority, the KEK wrap in the vault) against `vhdcrypt vault serve` on
 * loopback, vs the embedded file: vault. Both vaults hold an RSA-3072 KEK made beforehand, so neither run
 * includes key generation. Runs are paired and alternated (each round runs both, the order swapped every
 * round); reported: each side's median and the median of the paired differences (target: under 150 ms).
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KEY_PERMISSIONS, SECRET_PERMISSIONS, openVault } from '../src/vault/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const rounds = Number(arg('--rounds', '11'));
const sizeMiB = Number(arg('--size', '16'));
const json = process.argv.includes('--json');
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(root, 'bin', 'vhdcrypt.cjs');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function must(args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, [bin, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`vhdcrypt ${args.join(' ')}: ${r.status}: ${r.stderr}`);
  return r.stdout;
}

const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-bench-vault-'));
const baseEnv: NodeJS.ProcessEnv = { ...process.env };
for (const k of ['VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', 'VHDCRYPT_VAULT_PASSPHRASE', 'NODE_EXTRA_CA_CERTS']) delete baseEnv[k];
let server: ReturnType<typeof spawn> | null = null;
try {
  const src = join(dir, 'src.raw');
  const buf = Buffer.alloc(sizeMiB * 1024 * 1024);
  randomFillSync(buf);
  writeFileSync(src, buf);

  const local = `file:${join(dir, 'local')}`;
  must(['vault', 'init', '--vault', local], baseEnv);
  must(['vault', 'key', 'create', '--vault', local, '-n', 'vhdcrypt-kek', '--kty', 'RSA', '--size', '3072'], baseEnv);

  const served = `file:${join(dir, 'served')}`;
  must(['vault', 'init', '--vault', served], baseEnv);
  const owner = await openVault(served, { create: false });
  const p = await owner.addPrincipal('bench');
  await owner.setAccessPolicy('bench', { secrets: [...SECRET_PERMISSIONS], keys: [...KEY_PERMISSIONS] });
  await owner.createKey('vhdcrypt-kek', { kty: 'RSA', size: 3072 });
  await owner.close();
  server = spawn(process.execPath, [bin, 'vault', 'serve', '--vault', served, '--listen', '127.0.0.1:0', '--json'], { env: baseEnv, stdio: ['ignore', 'pipe', 'inherit'] });
  const shown = await new Promise<{ url: string; tenantId: string; caPath: string }>((resolve, reject) => {
    let out = '';
    server!.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      try {
        resolve(JSON.parse(out) as { url: string; tenantId: string; caPath: string });
      } catch {
        // Not the whole object yet.
      }
    });
    server!.once('exit', (code) => reject(new Error(`vault serve exited (${code}) before listening`)));
  });
  const httpsEnv: NodeJS.ProcessEnv = {
    ...baseEnv,
    VHDCRYPT_VAULT_CA: shown.caPath,
    AZURE_TENANT_ID: shown.tenantId,
    AZURE_CLIENT_ID: (p as { clientId?: string }).clientId,
    AZURE_CLIENT_SECRET: (p as { clientSecret?: string }).clientSecret,
    AZURE_AUTHORITY_HOST: shown.url,
  };

  const run = (kind: 'file' | 'https', i: number): number => {
    const out = join(dir, `out-${kind}-${i}.img`);
    const t0 = performance.now();
    must(['encrypt', src, out, '--vault', kind === 'file' ? local : shown.url], kind === 'file' ? baseEnv : httpsEnv);
    const ms = performance.now() - t0;
    rmSync(out, { force: true });
    return ms;
  };
  // One unmeasured run each: the page cache and the server's first TLS session are warm for every measured run.
  run('file', -1);
  run('https', -1);
  const file: number[] = [];
  const https: number[] = [];
  const diffs: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const order: Array<'file' | 'https'> = i % 2 ? ['https', 'file'] : ['file', 'https'];
    const t: Record<string, number> = {};
    for (const k of order) t[k] = run(k, i);
    file.push(t.file!);
    https.push(t.https!);
    diffs.push(t.https! - t.file!);
  }
  const result = {
    sizeMiB, rounds,
    fileMedianMs: Math.round(median(file)), httpsMedianMs: Math.round(median(https)),
    addedMedianMs: Math.round(median(diffs)), addedMinMs: Math.round(Math.min(...diffs)), addedMaxMs: Math.round(Math.max(...diffs)),
    targetMs: 150,
  };
  if (json) process.stdout.write(JSON.stringify(result) + '\n');
  else {
    process.stdout.write(`encrypt ${sizeMiB} MiB, ${rounds} paired rounds (alternated)\n`
      + `  file: vault   median ${result.fileMedianMs} ms\n  https: vault  median ${result.httpsMedianMs} ms (vault serve on loopback)\n`
      + `  added by https: median ${result.addedMedianMs} ms (min ${result.addedMinMs}, max ${result.addedMaxMs}); target < ${result.targetMs} ms\n`);
  }
} finally {
  server?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
