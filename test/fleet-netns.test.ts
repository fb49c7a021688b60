/**
 * Workers on other hosts: two network namespaces (ip netns), each joined to this one by a veth pair, run a worker
 * that reaches Redis over TCP at this side's address of its link, as a worker on another machine would, and a
 * `vhdcrypt vault serve` on this side of the first link (the second namespace routes to it through its own link)
 * as an https: vault. Each worker has a principal of its own, given through the environment as Azure's
 * client-credentials variables; jobs name only the vault's URL. Skipped, with the reason, where namespaces cannot
 * be made (no root, no veth).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { openVault } from '../src/vault/index.js';
import { createFleet, type Fleet } from '../src/fleet/index.js';
import { makeRaw, qemuCompare, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { CLI, exited, startRedis, startWorker, until, type TestRedis, type WorkerProcess } from './fixtures/fleet/harness.js';
import { startVaultServer, type Permissions, type StartedVaultServer } from './helpers/vault-server.js';

const MIB = 1 << 20;
// Names are global on the machine: ours carry this process's id.
const TAG = (process.pid % 100000).toString(36);
const NAMESPACES = [0, 1].map((i) => ({ ns: `vhdfleet-${TAG}-${i}`, host: `vf${TAG}h${i}`, peer: `vf${TAG}p${i}`, here: `10.231.${(process.pid % 200) + 1}.${4 * i + 1}`, there: `10.231.${(process.pid % 200) + 1}.${4 * i + 2}` }));

function ip(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, err: `${r.stderr ?? ''}${r.error?.message ?? ''}`.trim() };
}

function teardown(): void {
  for (const n of NAMESPACES) {
    ip(['link', 'del', n.host]);
    ip(['netns', 'del', n.ns]);
  }
}

/** Make the namespaces and links; null when done, else why they cannot be made here. */
function setup(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  for (const n of NAMESPACES) {
    const steps: string[][] = [
      ['netns', 'add', n.ns],
      ['link', 'add', n.host, 'type', 'veth', 'peer', 'name', n.peer],
      ['link', 'set', n.peer, 'netns', n.ns],
      ['addr', 'add', `${n.here}/30`, 'dev', n.host],
      ['link', 'set', n.host, 'up'],
      ['-n', n.ns, 'addr', 'add', `${n.there}/30`, 'dev', n.peer],
      ['-n', n.ns, 'link', 'set', n.peer, 'up'],
      ['-n', n.ns, 'link', 'set', 'lo', 'up'],
      // Everything else through this side: the vault listens on the first link's address only.
      ['-n', n.ns, 'route', 'add', 'default', 'via', n.here],
    ];
    for (const s of steps) {
      const r = ip(s);
      if (!r.ok) {
        teardown();
        return `ip ${s.join(' ')}: ${r.err}`;
      }
    }
  }
  return null;
}

const why = setup();
if (why) console.warn(`fleet-netns skipped: ${why}`);

/** What a disk job asks of the vault: its secret and its key-encryption key. */
const JOB_PERMISSIONS: Permissions = { secrets: ['get', 'set'], keys: ['get', 'create', 'wrapKey', 'unwrapKey'] };

describe.skipIf(why !== null)('fleet workers in other network namespaces, over TCP', () => {
  let dir: string;
  let redis: TestRedis;
  let port: number;
  let vaultServer: StartedVaultServer;
  /** The CA to trust, copied out of the server's folder (removed by its stop()) for the processes that outlive it. */
  let caPath: string;
  let fleet: Fleet;
  const workers: WorkerProcess[] = [];
  const clientSecrets: string[] = [];

  /** A client process's environment: this principal through Azure's variables, no local vault or vault token. */
  async function principalEnv(name: string, permissions: Permissions): Promise<NodeJS.ProcessEnv> {
    const { clientId, clientSecret } = await vaultServer.addPrincipal(name, permissions);
    clientSecrets.push(clientSecret);
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const k of ['VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', 'VHDCRYPT_VAULT_PASSPHRASE', 'NODE_EXTRA_CA_CERTS']) delete env[k];
    return {
      ...env,
      AZURE_TENANT_ID: vaultServer.tenantId,
      AZURE_CLIENT_ID: clientId,
      AZURE_CLIENT_SECRET: clientSecret,
      AZURE_AUTHORITY_HOST: vaultServer.url,
      VHDCRYPT_VAULT_CA: caPath,
    };
  }

  beforeAll(async () => {
    if (!existsSync(join(import.meta.dirname, '../dist/src/fleet/index.js'))) {
      expect(spawnSync('npm', ['run', 'build'], { cwd: join(import.meta.dirname, '..'), stdio: 'ignore' }).status).toBe(0);
    }
    dir = tempDir('fleet-netns');
    // A port chosen here (Redis cannot report one it picked); the addresses are ours alone.
    port = 20000 + (process.pid % 30000);
    redis = await startRedis(dir, { hosts: NAMESPACES.map((n) => n.here), port });
    vaultServer = await startVaultServer({ args: ['--listen', `${NAMESPACES[0]!.here}:0`] });
    caPath = join(dir, 'vault-ca.pem');
    copyFileSync(vaultServer.caPath, caPath);
    fleet = await createFleet({ connection: redis.url, queue: 'ns' });
    for (const [i, n] of NAMESPACES.entries()) {
      const env = await principalEnv(`worker${i}`, JOB_PERMISSIONS);
      workers.push(await startWorker(`redis://${n.here}:${port}`, ['--queue', 'ns'], env, ['ip', 'netns', 'exec', n.ns]));
    }
  }, 120_000);

  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => exited(w.child)));
    await Promise.allSettled([fleet?.close()]);
    await redis?.stop();
    await vaultServer?.stop();
    teardown();
    if (dir) removeDir(dir);
  });

  it('runs jobs submitted here on workers that reach Redis and the vault only over their links, each as its own principal', async () => {
    // Each worker runs in a network namespace of its own, not this one.
    const netns = (pid: number | string) => readlinkSync(`/proc/${pid}/ns/net`);
    expect(new Set([netns('self'), ...workers.map((w) => netns(w.pid))]).size).toBe(3);
    expect(vaultServer.url).toMatch(new RegExp(`^https://${NAMESPACES[0]!.here.replace(/\./g, '\\.')}:\\d+$`));
    const vault = vaultServer.url;
    const images = [0, 1, 2, 3].map((i) => {
      const src = join(dir, `n${i}.raw`);
      makeRaw(src, 4 * MIB, [[0, 2 * MIB]]);
      return { src, dst: join(dir, `n${i}.enc.raw`) };
    });
    const sinceSeq = ((await readAudit()).at(-1)?.seq ?? 0);
    await fleet.submit(images.map((im) => ({ source: im.src, destination: im.dst, options: { vault } })));
    await until(async () => ((await fleet.status()).counts['completed'] === 4 ? true : null), 90_000, 'the four jobs to complete');
    // Everything Redis was given (its append-only files, written at every command): no principal's secret.
    const written = readdirSync(join(dir, 'appendonlydir')).map((f) => readFileSync(join(dir, 'appendonlydir', f), 'latin1')).join('');
    expect(written).toContain(vault);
    for (const secret of clientSecrets) expect(written.includes(secret)).toBe(false);
    // Decrypted through the same vault, by a principal of the test's own, in a separate process.
    const reader = await principalEnv('checker', { secrets: ['get'], keys: ['get', 'unwrapKey'] });
    for (const im of images) {
      const back = `${im.dst}.back`;
      const r = spawnSync(process.execPath, [CLI, 'decrypt', '--vault', vault, '--threads', '1', im.dst, back], { env: reader, encoding: 'utf8' });
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(qemuCompare(im.src, 'raw', back, 'raw').same).toBe(true);
    }
    // The vault saw each worker's own principal seal its disks' keys. What it refused them is only what the
    // provider asks on the way and does without: lists (no list permission) and the KEK before it was made.
    const audit = (await readAudit()).filter((e) => e.seq > sinceSeq && /^worker\d$/.test(e.principal));
    for (const w of ['worker0', 'worker1']) {
      const ok = new Set(audit.filter((e) => e.principal === w && e.result === 'ok').map((e) => e.operation));
      expect([w, ok.has('wrapKey'), ok.has('setSecret')]).toEqual([w, true, true]);
    }
    const refused = audit.filter((e) => e.result !== 'ok');
    expect(refused.filter((e) => !(e.operation.startsWith('list') && e.result === 'VAULT_FORBIDDEN') && !(e.operation === 'getKey' && e.result === 'VAULT_KEY_NOT_FOUND'))).toEqual([]);
  }, 150_000);

  it('fails a job at once with VAULT_FORBIDDEN when the worker\'s principal may not unwrap its key', async () => {
    const env = await principalEnv('nounwrap', { secrets: ['get', 'set'], keys: ['get', 'create', 'wrapKey'] });
    const weak = await startWorker(`redis://${NAMESPACES[1]!.here}:${port}`, ['--queue', 'ns-weak'], env, ['ip', 'netns', 'exec', NAMESPACES[1]!.ns]);
    workers.push(weak);
    const weakFleet = await createFleet({ connection: redis.url, queue: 'ns-weak' });
    try {
      // An image sealed by the workers that may (on their queue), to be opened by the one that may not.
      const plain = join(dir, 'f.raw');
      const src = join(dir, 'f.enc.raw');
      makeRaw(plain, 2 * MIB, [[0, MIB]]);
      const done = (await fleet.status()).counts['completed']!;
      await fleet.submit([{ source: plain, destination: src, options: { vault: vaultServer.url } }]);
      await until(async () => (await fleet.status()).counts['completed'] === done + 1, 60_000, 'the image to be sealed');
      const dst = join(dir, 'forbidden.raw');
      const [job] = await weakFleet.submit([{ operation: 'decrypt', source: src, destination: dst, options: { vault: vaultServer.url } }]);
      const failed = await until(async () => (await weakFleet.status()).failed.find((f) => f.id === job!.id), 60_000, 'the job to fail');
      expect([failed.code, failed.attempts]).toEqual(['VAULT_FORBIDDEN', 1]);
      expect(existsSync(dst)).toBe(false);
      // Refused once, by the vault, to this worker's principal: the job was not tried again.
      const unwraps = (await readAudit()).filter((e) => e.principal === 'nounwrap' && e.operation === 'unwrapKey');
      expect(unwraps.map((e) => e.result)).toEqual(['VAULT_FORBIDDEN']);
    } finally {
      await weakFleet.close();
    }
  }, 90_000);

  async function readAudit() {
    const v = await openVault(`file:${vaultServer.vaultDir}`, { create: false, passphrase: '' });
    try {
      return await v.readAudit();
    } finally {
      await v.close();
    }
  }
});
