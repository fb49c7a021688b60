/**
 * The fleet dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core loads the page,
 * sees a running job's progress bar move and a failed job's error code, all from a real redis-server and a worker
 * process. Also: the server answers only GET on loopback names, and refuses to listen elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { spawnSync } from 'node:child_process';
import { chromium, type BrowserContext } from 'playwright-core';
import { openVault } from '../src/vault/index.js';
import { createFleet, startDashboard, type Dashboard, type Fleet } from '../src/fleet/index.js';
import { makeRaw, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';
import { exited, slowExport, startRedis, startWorker, type SlowExport, type TestRedis, type WorkerProcess } from './fixtures/fleet/harness.js';

const MIB = 1 << 20;
/** The page's document, inside page.waitForFunction (the tests compile without the DOM library). */
declare const document: { querySelector(selector: string): { getAttribute(name: string): string | null } | null };
const CHROMIUM = '/usr/bin/chromium';

function rawRequest(url: string, method: string, host?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path: '/', method, headers: host ? { host } : {} }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe.skipIf(!existsSync(CHROMIUM))('fleet dashboard in headless Chromium', () => {
  let dir: string;
  let redis: TestRedis;
  let fleet: Fleet;
  let dashboard: Dashboard;
  let worker: WorkerProcess;
  let slow: SlowExport;
  let browser: BrowserContext;
  let profile: string | undefined;

  beforeAll(async () => {
    if (!existsSync(join(import.meta.dirname, '../dist/src/fleet/index.js'))) {
      expect(spawnSync('npm', ['run', 'build'], { cwd: join(import.meta.dirname, '..'), stdio: 'ignore' }).status).toBe(0);
    }
    dir = tempDir('fleet-dash');
    redis = await startRedis(dir);
    fleet = await createFleet({ connection: redis.url, queue: 'dash' });
    dashboard = await startDashboard({ connection: redis.url, queue: 'dash', port: 0, intervalMs: 250 });
    // A fresh profile (--user-data-dir, which Playwright passes for a persistent context) each run.
    profile = mkdtempSync(join(tmpdir(), 'vhdcrypt-chromium-'));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  afterAll(async () => {
    slow?.child.kill('SIGTERM');
    worker?.child.kill('SIGKILL');
    if (worker) await exited(worker.child);
    await Promise.allSettled([browser?.close(), dashboard?.close(), fleet?.close()]);
    if (profile) removeDir(profile);
    await redis?.stop();
    removeDir(dir);
  });

  it('serves only GET, only to loopback names, and listens only on loopback', async () => {
    expect(await rawRequest(dashboard.url, 'GET')).toBe(200);
    expect(await rawRequest(dashboard.url, 'POST')).toBe(405);
    expect(await rawRequest(dashboard.url, 'GET', 'attacker.example:80')).toBe(421);
    await expect(startDashboard({ connection: redis.url, host: '0.0.0.0', port: 0 })).rejects.toMatchObject({ code: 'FLEET_BAD_ARGUMENT' });
  });

  it('shows a running job\'s progress moving and a failed job\'s code', async () => {
    const vault = `file:${join(dir, 'vault')}`;
    await (await openVault(vault, { create: true })).close();
    const raw = join(dir, 'slow.raw');
    makeRaw(raw, 24 * MIB, [[0, 24 * MIB]]);
    slow = await slowExport(dir, raw, 'slow');
    // A VHD whose dynamic header was cut off: VHD_TRUNCATED or a checksum error, a typed bad input either way.
    const badRaw = join(dir, 'bad.raw');
    makeRaw(badRaw, 4 * MIB, [[0, MIB]]);
    const bad = join(dir, 'bad.vhd');
    rawToVhd(badRaw, bad, 'dynamic');
    spawnSync('truncate', ['-s', '1000', bad]);
    const options = { vault, batchBytes: MIB, checkpointBytes: MIB };
    const [running, failing] = await fleet.submit([
      { source: slow.uri, destination: join(dir, 'slow.enc.raw'), options },
      { source: bad, destination: join(dir, 'bad.enc.vhd'), options },
    ]);
    worker = await startWorker(redis.url, ['--queue', 'dash', '--concurrency', '2']);

    const page = await browser.newPage();
    await page.goto(dashboard.url);
    await page.waitForSelector('#conn:text("live")');
    const bar = page.locator(`#running tr[data-job-id="${running!.id}"] progress`);
    const value = async () => Number(await bar.getAttribute('value'));
    await bar.waitFor();
    await page.waitForFunction((id) => Number(document.querySelector(`#running tr[data-job-id="${id}"] progress`)?.getAttribute('value') ?? 0) > 0, running!.id);
    const first = await value();
    // The same bar, later, further along: the page follows the job live.
    await page.waitForFunction(
      ([id, v]) => Number(document.querySelector(`#running tr[data-job-id="${id}"] progress`)?.getAttribute('value') ?? 0) > (v as number),
      [running!.id, first] as const,
    );
    expect(await value()).toBeGreaterThan(first);
    const code = page.locator(`#failed tr[data-job-id="${failing!.id}"] td.code`);
    await code.waitFor();
    expect(await code.textContent()).toMatch(/^VHD_[A-Z_]+$/);
    expect(await page.locator('#counts tr[data-state="failed"] td.n').textContent()).toBe('1');
    await page.close();
  });
});
