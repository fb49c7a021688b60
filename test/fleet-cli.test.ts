/**
 * `vhdcrypt fleet submit|status|cancel|retry|dashboard` as a user types them, against a redis-server of the test's
 * own (no worker: the jobs stay queued): one image and a manifest, status as a table and as JSON, cancel of a
 * waiting job, and the typed refusals with their exit statuses (a job carrying a passphrase, a bad manifest line,
 * a bad or unreachable --redis, retry of a job that did not fail, a dashboard off loopback).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeRaw, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { CLI, startRedis, type TestRedis } from './fixtures/fleet/harness.js';

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('vhdcrypt fleet (command line)', () => {
  let dir: string;
  let redis: TestRedis;

  beforeAll(async () => {
    if (!existsSync(join(import.meta.dirname, '../dist/src/fleet/index.js'))) {
      expect(spawnSync('npm', ['run', 'build'], { cwd: join(import.meta.dirname, '..'), stdio: 'ignore' }).status).toBe(0);
    }
    dir = tempDir('fleet-cli');
    redis = await startRedis(dir);
    for (const n of ['a', 'b', 'c']) makeRaw(join(dir, `${n}.raw`), 1 << 20, [[0, 1 << 20]]);
  });

  afterAll(async () => {
    await redis?.stop();
    removeDir(dir);
  });

  it('submits one image and a manifest, shows them, cancels a waiting job', async () => {
    const r = await cli(['fleet', 'submit', '--redis', redis.url, '--queue', 'c', join(dir, 'a.raw'), join(dir, 'a.enc.raw'), '--format', 'luks1', '--key-file', join(dir, 'key'), '--json']);
    expect(r.stderr).toBe('');
    const a = JSON.parse(r.stdout) as { jobs: { id: string; added: boolean; state: string }[] };
    expect(a.jobs).toEqual([{ id: expect.stringMatching(/^a\.enc\.raw-[0-9a-f]{12}$/), added: true, state: 'waiting' }]);
    writeFileSync(join(dir, 'jobs.jsonl'), ['# two jobs', JSON.stringify({ source: 'b.raw', destination: 'b.enc.raw', id: 'job-b', priority: 5 }), '', JSON.stringify({ operation: 'encrypt', source: 'c.raw', destination: 'c.enc.raw', options: { vault: `file:${dir}/v` } })].join('\n'));
    const m = await cli(['fleet', 'submit', '--redis', redis.url, '--queue', 'c', '--manifest', join(dir, 'jobs.jsonl')]);
    expect(m.code).toBe(0);
    expect(m.stdout).toMatch(/^job-b: queued\nc\.enc\.raw-[0-9a-f]{12}: queued\n$/);
    const again = await cli(['fleet', 'submit', '--redis', redis.url, '--queue', 'c', join(dir, 'a.raw'), join(dir, 'a.enc.raw')]);
    expect(again.stdout).toMatch(/already there \(waiting\)/);

    const s = await cli(['fleet', 'status', '--redis', redis.url, '--queue', 'c', '--json']);
    const status = JSON.parse(s.stdout) as { counts: Record<string, number>; bytesRemaining: number };
    expect(status.counts).toMatchObject({ waiting: 2, prioritized: 1, active: 0, failed: 0 });
    expect(status.bytesRemaining).toBe(3 << 20);
    const t = await cli(['fleet', 'status', '--redis', redis.url, '--queue', 'c']);
    expect(t.stdout).toMatch(/^queue c: waiting 2, prioritized 1, delayed 0, active 0, completed 0, failed 0\nthroughput 0\.0 MB\/s, 3\.1 MB left, ETA -\n/);

    const c = await cli(['fleet', 'cancel', '--redis', redis.url, '--queue', 'c', 'job-b']);
    expect([c.code, c.stdout]).toEqual([0, 'job-b: removed from the queue\n']);
    const gone = await cli(['fleet', 'cancel', '--redis', redis.url, '--queue', 'c', 'job-b']);
    expect([gone.code, gone.stderr]).toEqual([2, 'vhdcrypt: FLEET_JOB_NOT_FOUND: no job job-b in queue c\n']);
    const retry = await cli(['fleet', 'retry', '--redis', redis.url, '--queue', 'c', a.jobs[0]!.id]);
    expect([retry.code, retry.stderr]).toEqual([2, `vhdcrypt: FLEET_JOB_STATE: job ${a.jobs[0]!.id} is waiting: only a failed job can be retried\n`]);
  });

  it('refuses secrets in jobs, bad manifests, bad or unreachable Redis and a dashboard off loopback, with typed codes', async () => {
    writeFileSync(join(dir, 'secret.jsonl'), JSON.stringify({ source: 'a.raw', destination: 'x.enc.raw', options: { passphrase: 'hunter2-PLANTED' } }) + '\n');
    writeFileSync(join(dir, 'broken.jsonl'), '{"source": "a.raw",\n');
    // Independent runs, side by side.
    const [s, b, u, down, d] = await Promise.all([
      cli(['fleet', 'submit', '--redis', redis.url, '--manifest', join(dir, 'secret.jsonl')]),
      cli(['fleet', 'submit', '--redis', redis.url, '--manifest', join(dir, 'broken.jsonl')]),
      cli(['fleet', 'status', '--redis', 'redis://:pw-PLANTED@']),
      cli(['fleet', 'status', '--redis', `unix://${join(dir, 'nobody.sock')}`]),
      cli(['fleet', 'dashboard', '--redis', redis.url, '--listen', '0.0.0.0:0']),
    ]);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/^vhdcrypt: FLEET_BAD_JOB: options\.passphrase: a job carries no secret value/);
    expect(s.stderr).not.toContain('hunter2-PLANTED');
    expect([b.code, b.stderr]).toEqual([3, `vhdcrypt: FLEET_BAD_MANIFEST: ${join(dir, 'broken.jsonl')} line 1: not JSON\n`]);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/^vhdcrypt: FLEET_BAD_REDIS_URL: /);
    expect(u.stderr).not.toContain('pw-PLANTED');
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/^vhdcrypt: FLEET_REDIS_FAILED: cannot reach Redis at unix:\/\/.*nobody\.sock/);
    expect(d.code).toBe(2);
    expect(d.stderr).toMatch(/^vhdcrypt: FLEET_BAD_ARGUMENT: the dashboard listens on loopback only/);
    const none = await cli(['fleet', 'status']);
    expect(none.code).toBe(2);
  });
});
