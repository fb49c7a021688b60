/**
 * npm run bench:bitlocker [-- --runs N] [--json]
 * Decrypt throughput of a BitLocker AES-XTS-128 volume (cryptsetup's clearkey-only test image, 100 MiB, opened with
 * its clear key so no KDF is timed) against the engine's LUKS2 decrypt of a volume of the same size and the same
 * cipher strength (AES-XTS with 256-bit keys, i.e. AES-128; vault-sealed key, PBKDF2 1000 iterations), both into raw
 * outputs, both through the worker pool (2 threads). Paired and alternated: each round runs both, the order swapped
 * every round; medians of N rounds (default 7). The ratio BitLocker/LUKS is the figure (target: within 1.2x).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { openSync, writeSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { decryptBitlockerImage, decryptImage, encryptImage } from '../src/engine/index.js';
import { openVault } from '../src/vault/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const runs = Number(arg('--runs', '7'));
const json = process.argv.includes('--json');
const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..');
const TARBALL = join(ROOT, 'test', 'fixtures', 'bitlk', 'bitlk-images.tar.xz');

const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-bitlk-bench-'));
try {
  execFileSync('tar', ['-xJf', TARBALL, '-C', dir, 'bitlk-images/bitlk-aes-xts-128-clearkey-only.img']);
  const bitlk = join(dir, 'bitlk-images', 'bitlk-aes-xts-128-clearkey-only.img');
  const size = statSync(bitlk).size;
  const vault = `file:${join(dir, 'vault')}`;
  await (await openVault(vault, { create: true })).close();
  const raw = join(dir, 'plain.raw');
  const fd = openSync(raw, 'w');
  const chunk = Buffer.alloc(4 << 20);
  for (let at = 0; at < size; at += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, size - at));
  closeSync(fd);
  const luks = join(dir, 'luks.raw');
  await encryptImage(raw, luks, { vault, keySize: 256, sectorSize: 512, threads: 2 });
  const rate = (bytes: number, s: number) => bytes / s / 1e6;
  const out = join(dir, 'out.raw');
  const times: { bitlocker: number[]; luks: number[] } = { bitlocker: [], luks: [] };
  const once = {
    bitlocker: async () => {
      const t = performance.now();
      await decryptBitlockerImage(bitlk, out, { protector: { kind: 'clear-key' }, threads: 2, force: true });
      return (performance.now() - t) / 1000;
    },
    luks: async () => {
      const t = performance.now();
      await decryptImage(luks, out, { vault, threads: 2, force: true });
      return (performance.now() - t) / 1000;
    },
  };
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? (['bitlocker', 'luks'] as const) : (['luks', 'bitlocker'] as const);
    for (const k of order) {
      execFileSync('sync');
      times[k].push(await once[k]());
      rmSync(out, { force: true });
    }
  }
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const result = {
    bytes: size,
    runs,
    bitlockerSeconds: median(times.bitlocker),
    luksSeconds: median(times.luks),
    bitlockerMBps: rate(size, median(times.bitlocker)),
    luksMBps: rate(size, median(times.luks)),
    ratioLuksOverBitlocker: median(times.bitlocker) / median(times.luks),
    all: times,
  };
  if (json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`BitLocker XTS-128 decrypt: ${result.bitlockerMBps.toFixed(0)} MB/s (median ${result.bitlockerSeconds.toFixed(3)} s of ${runs})`);
    console.log(`LUKS2 XTS-128 decrypt:     ${result.luksMBps.toFixed(0)} MB/s (median ${result.luksSeconds.toFixed(3)} s of ${runs})`);
    console.log(`BitLocker time / LUKS time: ${result.ratioLuksOverBitlocker.toFixed(2)}x (target <= 1.2x)`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
