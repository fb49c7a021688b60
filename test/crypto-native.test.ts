/**
 * The native backend (native/, build/Release/vhdcrypt_native.node) on every kernel
 * this CPU runs, checked against things we did not write: node:crypto's
 * aes-128-xts / aes-256-xts (one createCipheriv per sector, IV = the 16-byte LE
 * sector number), IEEE P1619/D16 Annex B vectors (test/vectors/ieee1619.json, see
 * its README for the source), and the CPU flags the Linux kernel reports in
 * /proc/cpuinfo for dispatch.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, test } from 'vitest';
import { XtsBackendUnavailableError, XtsError } from '../src/crypto/backend-errors.js';
import type { XtsKernelInstance } from '../src/crypto/kernel.js';
import { loadNativeBackend, nativeAddonPath, nativeKernels } from '../src/crypto/native-backend.js';
import { VhdcryptError } from '../src/errors.js';
import { oracleXts } from './helpers/xts-oracle.js';
import { cpuFlags } from './helpers/cpu-flags.js';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const MAX = (1n << 64n) - 1n;
const kernels = nativeKernels();

/** The kernels the dispatch must offer, derived from the CPU flags Linux reports (it hides flags the OS cannot save). */
function expectedKernels(): string[] {
  const flags = cpuFlags();
  if (flags === null) return [];
  const has = (...f: string[]) => f.every((x) => flags.has(x));
  if (!has('aes', 'pclmulqdq', 'sse4_1')) return [];
  const out: string[] = [];
  const vaes = has('vaes', 'vpclmulqdq', 'avx2');
  if (vaes && has('avx512f', 'avx512bw', 'avx512vl')) out.push('vaes-avx512');
  if (vaes) out.push('vaes-avx2');
  out.push('aesni');
  return out;
}

function expectXtsError(fn: () => unknown, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(VhdcryptError);
  expect(caught).toBeInstanceOf(code === 'XTS_BACKEND_UNAVAILABLE' ? XtsBackendUnavailableError : XtsError);
  expect((caught as VhdcryptError).code).toBe(code);
}

function keyOf(bytes: number): Buffer {
  return randomBytes(bytes);
}

test('dispatch offers exactly the kernels /proc/cpuinfo allows, best first', () => {
  // With AES-NI in the flags the addon must have built and loaded; without, it must say unavailable.
  expect(kernels).toEqual(expectedKernels());
  if (kernels.length > 0) expect(loadNativeBackend().kernel).toBe(process.env.VHDCRYPT_CPU || kernels[0]);
  else expectXtsError(() => loadNativeBackend(), 'XTS_BACKEND_UNAVAILABLE');
});

describe.each(kernels)('kernel %s against node:crypto', (kernel) => {
  const backend = loadNativeBackend(kernel);

  test.each([32, 64])('%i-byte key: 512- and 4096-byte sectors, steps 1 and 8, tweaks near 0, 2^32, 2^64-1', (keyLen) => {
    const key = keyOf(keyLen);
    const x = backend.create(key);
    for (const [sectorSize, step] of [[512, 1], [4096, 8], [4096, 1], [512, 8]] as const) {
      for (const count of [1, 7, 40]) {
        const span = BigInt((count - 1) * step);
        for (const first of [0n, 3n, (1n << 32n) - 5n, MAX - span, MAX - span - 1n]) {
          const plain = randomBytes(count * sectorSize);
          const want = oracleXts(true, key, plain, first, sectorSize, step);
          const out = Buffer.alloc(plain.length);
          x.crypt(true, plain, out, first, sectorSize, step); // out of place
          expect(out.equals(want), `enc ${sectorSize}/${step}/${count}@${first}`).toBe(true);
          const back = Buffer.from(out);
          x.crypt(false, back, back, first, sectorSize, step); // in place
          expect(back.equals(plain), `dec ${sectorSize}/${step}/${count}@${first}`).toBe(true);
        }
      }
    }
    x.dispose();
  });

  test.each([32, 64])('%i-byte key: a 1 MiB batch (2048 sectors) and every sector size 16..4096', (keyLen) => {
    const key = keyOf(keyLen);
    const x = backend.create(key);
    const big = randomBytes(1 << 20);
    const first = 0x1234_5678_9an;
    const want = oracleXts(true, key, big, first, 512);
    const data = Buffer.from(big);
    x.crypt(true, data, data, first, 512, 1);
    expect(data.equals(want)).toBe(true);
    x.crypt(false, data, data, first, 512, 1);
    expect(data.equals(big)).toBe(true);
    for (let sectorSize = 16; sectorSize <= 4096; sectorSize *= 2) {
      for (const count of [1, 3, 17]) {
        const plain = randomBytes(sectorSize * count);
        const out = Buffer.alloc(plain.length);
        x.crypt(true, plain, out, 77n, sectorSize, 3);
        expect(out.equals(oracleXts(true, key, plain, 77n, sectorSize, 3)), `${sectorSize}x${count}`).toBe(true);
        x.crypt(false, out, out, 77n, sectorSize, 3);
        expect(out.equals(plain)).toBe(true);
      }
    }
    x.dispose();
  });

  test('odd-offset views of SharedArrayBuffers, bytes around them untouched, no copy', () => {
    const key = keyOf(64);
    const x = backend.create(key);
    const sectors = 9;
    const len = sectors * 512;
    const srcAll = new Uint8Array(new SharedArrayBuffer(len + 11));
    const dstAll = new Uint8Array(new SharedArrayBuffer(len + 8));
    srcAll.set(randomBytes(srcAll.length));
    dstAll.set(randomBytes(dstAll.length));
    const srcBefore = Buffer.from(srcAll);
    const dstBefore = Buffer.from(dstAll);
    const src = srcAll.subarray(3, 3 + len);
    const dst = dstAll.subarray(5, 5 + len);
    x.crypt(true, src, dst, 1000n, 512, 8);
    expect(Buffer.from(dst).equals(oracleXts(true, key, Buffer.from(src), 1000n, 512, 8))).toBe(true);
    expect(Buffer.from(srcAll).equals(srcBefore)).toBe(true); // source never written
    expect(Buffer.from(dstAll.subarray(0, 5)).equals(dstBefore.subarray(0, 5))).toBe(true);
    expect(Buffer.from(dstAll.subarray(5 + len)).equals(dstBefore.subarray(5 + len))).toBe(true);
    // In place on the odd view: decrypting the ciphertext there gives the plaintext back.
    x.crypt(false, dst, dst, 1000n, 512, 8);
    expect(Buffer.from(dst).equals(Buffer.from(src))).toBe(true);
    expect(Buffer.from(dstAll.subarray(0, 5)).equals(dstBefore.subarray(0, 5))).toBe(true);
    expect(Buffer.from(dstAll.subarray(5 + len)).equals(dstBefore.subarray(5 + len))).toBe(true);
    x.dispose();
  });

  test('IEEE P1619 Annex B vectors, both directions; vector 1 (equal halves) refused', () => {
    const file = JSON.parse(readFileSync(join(root, 'test/vectors/ieee1619.json'), 'utf8')) as {
      vectors: Array<{ name: string; key: string; sector: string; pt: string; ct: string }>;
    };
    let checked = 0;
    for (const v of file.vectors) {
      const key = Buffer.from(v.key, 'hex');
      const pt = Buffer.from(v.pt, 'hex');
      const ct = Buffer.from(v.ct, 'hex');
      if (key.subarray(0, key.length / 2).equals(key.subarray(key.length / 2))) {
        expectXtsError(() => backend.create(key), 'XTS_EQUAL_KEY_HALVES');
        continue;
      }
      const x = backend.create(key);
      const out = Buffer.alloc(pt.length);
      x.crypt(true, pt, out, BigInt(v.sector), pt.length, 1);
      expect(out.toString('hex'), v.name).toBe(v.ct);
      x.crypt(false, ct, out, BigInt(v.sector), pt.length, 1);
      expect(out.equals(pt), v.name).toBe(true);
      x.dispose();
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(5);
  });
});

const noAddon = kernels.length === 0; // only on a CPU without AES-NI (checked against /proc/cpuinfo above)

describe.skipIf(noAddon)('misuse reaches the addon and is refused with typed errors', () => {
  const kernel = kernels[0] ?? 'aesni';
  let x: XtsKernelInstance;
  beforeAll(() => {
    x = loadNativeBackend(kernel).create(keyOf(64));
  });

  test('bad lengths, sizes, tweaks and views (the front bypassed)', () => {
    const a = randomBytes(1024);
    const keep = Buffer.from(a);
    const b = Buffer.alloc(1024);
    expectXtsError(() => x.crypt(true, a.subarray(0, 1000), b.subarray(0, 1000), 0n, 512, 1), 'XTS_BAD_LENGTH');
    expectXtsError(() => x.crypt(true, a, b.subarray(0, 512), 0n, 512, 1), 'XTS_BAD_LENGTH');
    expectXtsError(() => x.crypt(true, a.subarray(0, 0), b.subarray(0, 0), 0n, 512, 1), 'XTS_BAD_LENGTH');
    expectXtsError(() => x.crypt(true, a.subarray(0, 24), b.subarray(0, 24), 0n, 16, 1), 'XTS_BAD_LENGTH');
    for (const size of [0, 8, 24, 500, 8192, 512.5, Number.NaN]) {
      expectXtsError(() => x.crypt(true, a, b, 0n, size, 1), 'XTS_BAD_SECTOR_SIZE');
    }
    expectXtsError(() => x.crypt(true, a, b, MAX, 512, 1), 'XTS_TWEAK_OVERFLOW'); // second sector would be 2^64
    expectXtsError(() => x.crypt(true, a, b, MAX - 7n, 512, 8), 'XTS_TWEAK_OVERFLOW');
    expectXtsError(() => x.crypt(true, a, b, 1n << 64n, 512, 1), 'XTS_TWEAK_OVERFLOW');
    expectXtsError(() => x.crypt(true, a, b, -1n, 512, 1), 'XTS_TWEAK_OVERFLOW');
    const loose = x as unknown as { crypt(...args: unknown[]): void };
    expectXtsError(() => loose.crypt(true, a, b, 0, 512, 1), 'XTS_BAD_ARG'); // number, not bigint
    expectXtsError(() => loose.crypt(true, new Float64Array(128), b, 0n, 512, 1), 'XTS_BAD_ARG');
    expectXtsError(() => loose.crypt(true, a, 'b', 0n, 512, 1), 'XTS_BAD_ARG');
    expectXtsError(() => loose.crypt('yes', a, b, 0n, 512, 1), 'XTS_BAD_ARG');
    expectXtsError(() => loose.crypt(true, a, b, 0n, 512), 'XTS_BAD_ARG');
    expectXtsError(() => x.crypt(true, a, b, 0n, 512, 0), 'XTS_BAD_ARG');
    expectXtsError(() => x.crypt(true, a, b, 0n, 512, 1.5), 'XTS_BAD_ARG');
    // Partial overlap would corrupt: refused (the front copies instead).
    expectXtsError(() => x.crypt(true, a.subarray(0, 512), a.subarray(16, 528), 0n, 512, 1), 'XTS_BAD_ARG');
    expect(a.equals(keep)).toBe(true);
    expect(b.equals(Buffer.alloc(1024))).toBe(true);
  });

  test('a view of a detached (transferred) buffer is refused, not dereferenced', () => {
    const ab = new ArrayBuffer(1024);
    const view = new Uint8Array(ab);
    structuredClone(ab, { transfer: [ab] }); // detaches ab: view now has length 0
    expect(view.length).toBe(0);
    expectXtsError(() => x.crypt(true, view, view, 0n, 512, 1), 'XTS_BAD_LENGTH');
  });

  test('bad keys straight to the addon', () => {
    const backend = loadNativeBackend(kernel);
    expectXtsError(() => backend.create(randomBytes(48)), 'XTS_BAD_KEY');
    expectXtsError(() => backend.create(new Uint8Array(0)), 'XTS_BAD_KEY');
    const half = randomBytes(32);
    expectXtsError(() => backend.create(Buffer.concat([half, half])), 'XTS_EQUAL_KEY_HALVES');
  });

  test('dispose then use throws XTS_DISPOSED; dispose twice is harmless', () => {
    const y = loadNativeBackend(kernel).create(keyOf(32));
    const d = randomBytes(512);
    y.crypt(true, d, d, 0n, 512, 1);
    y.dispose();
    y.dispose();
    expectXtsError(() => y.crypt(true, d, d, 0n, 512, 1), 'XTS_DISPOSED');
  });

  test('unknown kernel names are unavailable, not crashes', () => {
    expectXtsError(() => loadNativeBackend('vaes-avx1024'), 'XTS_BACKEND_UNAVAILABLE');
    expect(nativeAddonPath()).toBe(join(root, 'build', 'Release', 'vhdcrypt_native.node'));
  });
});

describe.skipIf(noAddon)('threads and processes', () => {
  test('the addon loads and encrypts in several worker_threads at once, matching this thread', async () => {
    const addonPath = nativeAddonPath()!;
    const key = keyOf(64);
    const data = randomBytes(256 * 1024);
    const want = new Map(kernels.map((k) => {
      const out = Buffer.alloc(data.length);
      loadNativeBackend(k).create(key).crypt(true, data, out, 5n, 4096, 8);
      return [k, out];
    }));
    // Each worker loads the addon into its own environment, registers its own error
    // factory, encrypts with every kernel, and checks its own typed error path.
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.addonPath);
      class WorkerXtsError extends Error { constructor(code, message) { super(message); this.code = code; } }
      addon.setErrorFactory((code, message) => new WorkerXtsError(code, message));
      const results = {};
      for (const kernel of addon.kernels()) {
        const k = new addon.XtsKey(workerData.key, kernel);
        const out = new Uint8Array(workerData.data.length);
        for (let i = 0; i < 20; i++) k.crypt(true, workerData.data, out, 5n, 4096, 8);
        results[kernel] = out;
        k.dispose();
      }
      let code = 'none';
      try { new addon.XtsKey(new Uint8Array(10), 'aesni'); } catch (e) { code = (e instanceof WorkerXtsError) + ':' + e.code; }
      parentPort.postMessage({ results, code });
    `;
    const runs = Array.from({ length: 4 }, () => new Promise<{ results: Record<string, Uint8Array>; code: string }>((resolve, reject) => {
      const w = new Worker(source, { eval: true, workerData: { addonPath, key, data } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
    }));
    const got = await Promise.all(runs);
    for (const r of got) {
      expect(r.code).toBe('true:XTS_BAD_KEY');
      expect(Object.keys(r.results)).toEqual(kernels);
      for (const k of kernels) expect(Buffer.from(r.results[k]!).equals(want.get(k)!), k).toBe(true);
    }
    // This thread's addon (and error factory) still works after the workers' environments went away.
    expectXtsError(() => loadNativeBackend().create(new Uint8Array(10)), 'XTS_BAD_KEY');
  });

  describe('workers and child processes through the compiled loader (dist/)', () => {
    const distLoader = join(root, 'dist', 'src', 'crypto', 'native-backend.js');
    beforeAll(() => {
      // Child processes need the compiled JS; rebuild it when it is older than the source.
      // The backend and what it loads the addon through (the one loader, and the error classes its factory builds).
      const stale = ['crypto/native-backend', 'crypto/backend-errors', 'native-addon', 'nbd/errors'].some((name) => {
        const out = join(root, 'dist', 'src', `${name}.js`);
        return !existsSync(out) || statSync(out).mtimeMs < statSync(join(root, 'src', `${name}.ts`)).mtimeMs;
      });
      if (stale) {
        spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'ignore' });
      }
      expect(existsSync(distLoader)).toBe(true);
    });

    const childKernel = (env: Record<string, string>) => {
      const script = `import(${JSON.stringify(pathToFileURL(distLoader).href)}).then((m) => {
        try { console.log('kernel=' + m.loadNativeBackend().kernel); }
        catch (e) { console.log('error=' + e.code + ':' + e.constructor.name); }
      });`;
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    };

    test('worker_threads using the compiled loader get typed errors from their own addon instance', async () => {
      const source = `
        const { parentPort, workerData } = require('node:worker_threads');
        import(workerData.loader).then(async (m) => {
          const errors = await import(workerData.errors);
          const x = m.loadNativeBackend().create(workerData.key);
          const out = new Uint8Array(workerData.data.length);
          x.crypt(true, workerData.data, out, 9n, 512, 1);
          x.dispose();
          let typed = 'none';
          try { x.crypt(true, out, out, 9n, 512, 1); } catch (e) { typed = (e instanceof errors.XtsError) + ':' + e.code; }
          parentPort.postMessage({ kernel: m.loadNativeBackend().kernel, out, typed });
        });
      `;
      const key = keyOf(32);
      const data = randomBytes(64 * 512);
      const want = oracleXts(true, key, data, 9n, 512);
      const workerData = {
        loader: pathToFileURL(distLoader).href,
        errors: pathToFileURL(join(root, 'dist', 'src', 'crypto', 'backend-errors.js')).href,
        key,
        data,
      };
      const got = await Promise.all(Array.from({ length: 3 }, () => new Promise<{ kernel: string; out: Uint8Array; typed: string }>((resolve, reject) => {
        const w = new Worker(source, { eval: true, workerData });
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (c) => { if (c !== 0) reject(new Error(`worker exited ${c}`)); });
      })));
      for (const r of got) {
        expect(r.kernel).toBe(loadNativeBackend().kernel);
        expect(Buffer.from(r.out).equals(want)).toBe(true);
        expect(r.typed).toBe('true:XTS_DISPOSED');
      }
    });

    test('VHDCRYPT_CPU=aesni forces the aesni kernel', () => {
      expect(childKernel({ VHDCRYPT_CPU: 'aesni' })).toBe('kernel=aesni');
      if (kernels.includes('vaes-avx2')) expect(childKernel({ VHDCRYPT_CPU: 'vaes-avx2' })).toBe('kernel=vaes-avx2');
      expect(childKernel({ VHDCRYPT_CPU: '' })).toBe(`kernel=${kernels[0]}`);
    });

    test('VHDCRYPT_CPU naming no kernel makes the backend unavailable (typed)', () => {
      expect(childKernel({ VHDCRYPT_CPU: 'sse2' })).toBe('error=XTS_BACKEND_UNAVAILABLE:XtsBackendUnavailableError');
    });
  });
});
