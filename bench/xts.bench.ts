/**
 * npm run bench:xts — AES-256-XTS throughput, one thread, per backend and native
 * kernel on 1 MiB batches of 512- and 4096-byte sectors, beside node:crypto per
 * sector and `openssl speed`, all measured in this run; ratios against the project's
 * targets. Pass --json for machine-readable output.
 */
import { measureOpensslSpeed, measureXtsThroughput, type XtsThroughputRow } from '../src/bench/xts-throughput.js';

const json = process.argv.includes('--json');
const runs = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const perRun: XtsThroughputRow[][] = [];
const openssl: number[] = [];
for (let i = 0; i < runs; i++) {
  // Interleave the peer with our runs so a noisy neighbour hits both alike.
  const o = await measureOpensslSpeed(64, 1);
  if (o) openssl.push(o.mbPerSecond);
  perRun.push(await measureXtsThroughput({ timeMs: 500 }));
}
const names = [...new Set(perRun[0]!.map((r) => `${r.name}@${r.sectorSize}`))];
const rows = names.map((key) => {
  const [name, ss] = key.split('@') as [string, string];
  const values = perRun.map((run) => run.find((r) => r.name === name && String(r.sectorSize) === ss)!.mbPerSecond);
  return { name, sectorSize: Number(ss), mbPerSecond: median(values) };
});
const opensslMbps = openssl.length ? median(openssl) : null;
const get = (name: string, ss: number) => rows.find((r) => r.name === name && r.sectorSize === ss)?.mbPerSecond ?? NaN;
const bestNative = (ss: number) => Math.max(...rows.filter((r) => r.name.startsWith('native/') && r.sectorSize === ss).map((r) => r.mbPerSecond));
const wasm = (ss: number) => get('wasm/wasm-simd-bitsliced', ss);
const js = (ss: number) => get('js/noble', ss);

const ratios = {
  native4096VsOpenssl: opensslMbps ? bestNative(4096) / opensslMbps : null,
  native512VsOpenssl: opensslMbps ? bestNative(512) / opensslMbps : null,
  native512VsNodeCryptoPerSector: bestNative(512) / get('node:crypto per sector', 512),
  wasmVsJs512: wasm(512) / js(512),
  wasmVsJs4096: wasm(4096) / js(4096),
};
const targets = { native4096VsOpenssl: 1.5, native512VsOpenssl: 1.3, native512VsNodeCryptoPerSector: 50, wasmVsJs512: 4, wasmVsJs4096: 4 };

if (json) {
  console.log(JSON.stringify({ runs, rows, opensslMbps, ratios, targets }, null, 2));
} else {
  console.log(`AES-256-XTS, one thread, 1 MiB batches, median of ${runs} runs (MB/s = 10^6 bytes/s)\n`);
  console.log('backend/kernel'.padEnd(32) + '512-byte sectors'.padStart(18) + '4096-byte sectors'.padStart(19));
  for (const name of [...new Set(rows.map((r) => r.name))]) {
    console.log(name.padEnd(32) + get(name, 512).toFixed(0).padStart(18) + get(name, 4096).toFixed(0).padStart(19));
  }
  console.log('openssl speed -evp aes-256-xts -bytes 16384'.padEnd(50) + (opensslMbps?.toFixed(0) ?? 'n/a').padStart(19));
  console.log('\nratio                                   measured   target');
  for (const [k, v] of Object.entries(ratios)) {
    const t = targets[k as keyof typeof targets];
    const ok = v !== null && v >= t;
    console.log(k.padEnd(40) + (v === null ? 'n/a' : v.toFixed(2)).padStart(8) + `   >= ${t}  ${ok ? 'ok' : 'MISSED'}`);
  }
}
