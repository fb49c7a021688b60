/**
 * Workers on other hosts: two network namespaces (ip netns), each joined to this one by a veth pair, run a worker
 * that reaches Redis over TCP at this side's address of its link, as a worker on another machine would. Their
 * vault is the file vault on the shared disk. Skipped, with the reason, where namespaces cannot be made (no root,
 * no veth).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { decryptImage } from '../src/engine/index.js';
import { openVault } from '../src/vault/index.js';
import { createFleet, type Fleet } from '../src/fleet/index.js';
import { makeRaw, qemuCompare, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { exited, startRedis, startWorker, until, type TestRedis, type WorkerProcess } from './fixtures/fleet/harness.js';

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

describe.skipIf(why !== null)('fleet workers in other network namespaces, over TCP', () => {
  let dir: string;
  let redis: TestRedis;
  let fleet: Fleet;
  const workers: WorkerProcess[] = [];

  beforeAll(async () => {
    if (!existsSync(join(import.meta.dirname, '../dist/src/fleet/index.js'))) {
      expect(spawnSync('npm', ['run', 'build'], { cwd: join(import.meta.dirname, '..'), stdio: 'ignore' }).status).toBe(0);
    }
    dir = tempDir('fleet-netns');
    // A port chosen here (Redis cannot report one it picked); the addresses are ours alone.
    const port = 20000 + (process.pid % 30000);
    redis = await startRedis(dir, { hosts: NAMESPACES.map((n) => n.here), port });
    fleet = await createFleet({ connection: redis.url, queue: 'ns' });
    for (const n of NAMESPACES) {
      workers.push(await startWorker(`redis://${n.here}:${port}`, ['--queue', 'ns'], process.env, ['ip', 'netns', 'exec', n.ns]));
    }
  });

  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL');
    await Promise.all(workers.map((w) => exited(w.child)));
    await Promise.allSettled([fleet?.close()]);
    await redis?.stop();
    teardown();
    if (dir) removeDir(dir);
  });

  it('runs jobs submitted here on workers that reach Redis only over their links', async () => {
    // Each worker runs in a network namespace of its own, not this one.
    const netns = (pid: number | string) => readlinkSync(`/proc/${pid}/ns/net`);
    expect(new Set([netns('self'), ...workers.map((w) => netns(w.pid))]).size).toBe(3);
    const vault = `file:${join(dir, 'vault')}`;
    await (await openVault(vault, { create: true })).close();
    const images = [0, 1, 2, 3].map((i) => {
      const src = join(dir, `n${i}.raw`);
      makeRaw(src, 4 * MIB, [[0, 2 * MIB]]);
      return { src, dst: join(dir, `n${i}.enc.raw`) };
    });
    await fleet.submit(images.map((im) => ({ source: im.src, destination: im.dst, options: { vault } })));
    await until(async () => ((await fleet.status()).counts['completed'] === 4 ? true : null), 60_000, 'the four jobs to complete');
    for (const im of images) {
      const back = `${im.dst}.back`;
      await decryptImage(im.dst, back, { vault, threads: 1 });
      expect(qemuCompare(im.src, 'raw', back, 'raw').same).toBe(true);
    }
  });
});
