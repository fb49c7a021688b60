/**
 * npm run bench:delta [-- --runs N] [--changed MiB] [--disk GiB] [--json] [--dir DIR]
 * An encrypted delta costs what changed: whole-process runs of the vhdcrypt CLI, alternated and paired, median of
 * N rounds (order swapped every round, sync before each command, fresh outputs):
 *  - `encrypt child.vhd out.vhd --parent-image base.enc.vhd`: a differencing VHD with 256 MiB of random data in
 *    128 blocks spread over a 50 GiB disk, over the encrypted (empty, dynamic) base;
 *  - `encrypt fixed.vhd out.vhd`: a 256 MiB fixed VHD of random data (a new volume and vault secret each time).
 * Target: the delta takes at most 1.3x the fixed image's time, and its file is at most one block (and bitmap)
 * per allocated child block larger than the child.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomFillSync } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { createImage } from '../src/image/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const json = process.argv.includes('--json');
const runs = Number(arg('--runs', '5'));
const changedMiB = Number(arg('--changed', '256'));
const diskGiB = Number(arg('--disk', '50'));
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.cjs');
const dir = mkdtempSync(join(arg('--dir', tmpdir()), 'vhdcrypt-delta-bench-'));
const { NODE_EXTRA_CA_CERTS: _ca, ...callerEnv } = process.env;
void _ca;
const env: NodeJS.ProcessEnv = { ...callerEnv, VHDCRYPT_VAULT: join(dir, 'vault') };
const MiB = 1 << 20;
const BS = 2 * MiB;

function vhdcrypt(args: string[]): number {
  spawnSync('sync');
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: 'utf8' });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`vhdcrypt ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return s;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  try {
    if (spawnSync(process.execPath, [cli, 'vault', 'init'], { env }).status !== 0) throw new Error('vault init failed');
    const buf = new Uint8Array(BS);
    // The base: an empty dynamic disk, encrypted once.
    const base = join(dir, 'base.vhd');
    await (await createImage(base, { format: 'vhd-dynamic', virtualSize: BigInt(diskGiB) * 2n ** 30n })).close();
    vhdcrypt(['encrypt', base, join(dir, 'base.enc.vhd')]);
    // The child: changed blocks spread evenly over the disk.
    const child = join(dir, 'child.vhd');
    const c = await createImage(child, { format: 'vhd-differencing', parent: base });
    const blocks = (changedMiB * MiB) / BS;
    const stride = Math.floor((diskGiB * 2 ** 30) / BS / blocks);
    for (let i = 0; i < blocks; i++) {
      randomFillSync(buf);
      await c.write(BigInt(i * stride) * BigInt(BS), buf);
    }
    await c.close();
    // The reference: a fixed image of the same amount of data.
    const fixed = join(dir, 'fixed.vhd');
    const f = await createImage(fixed, { format: 'vhd-fixed', virtualSize: BigInt(changedMiB * MiB) });
    for (let o = 0; o < changedMiB * MiB; o += BS) {
      randomFillSync(buf);
      await f.write(BigInt(o), buf);
    }
    await f.close();
    const delta: number[] = [];
    const full: number[] = [];
    const out1 = join(dir, 'child.enc.vhd');
    const out2 = join(dir, 'fixed.enc.vhd');
    for (let r = 0; r < runs; r++) {
      for (const which of r % 2 === 0 ? ['delta', 'full'] : ['full', 'delta']) {
        if (which === 'delta') {
          rmSync(out1, { force: true });
          delta.push(vhdcrypt(['encrypt', child, out1, '--parent-image', join(dir, 'base.enc.vhd'), '--force']));
        } else {
          rmSync(out2, { force: true });
          full.push(vhdcrypt(['encrypt', fixed, out2, '--force']));
        }
      }
    }
    const ratio = median(delta) / median(full);
    const extra = statSync(out1).size - statSync(child).size;
    const result = {
      diskGiB,
      changedMiB,
      runs,
      deltaSeconds: delta,
      fixedSeconds: full,
      deltaMedian: median(delta),
      fixedMedian: median(full),
      ratio,
      ratioTarget: 1.3,
      childBytes: statSync(child).size,
      encryptedChildBytes: statSync(out1).size,
      extraBytes: extra,
      extraAllowed: blocks * (BS + 512),
    };
    if (json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else {
      process.stdout.write(
        `delta ${changedMiB} MiB in ${diskGiB} GiB: median ${result.deltaMedian.toFixed(2)} s; fixed ${changedMiB} MiB: median ${result.fixedMedian.toFixed(2)} s; ratio ${ratio.toFixed(2)} (target <= 1.3)\n` +
          `  runs delta ${delta.map((x) => x.toFixed(2)).join(' ')} | fixed ${full.map((x) => x.toFixed(2)).join(' ')}\n` +
          `  encrypted child ${result.encryptedChildBytes} bytes = child + ${extra} (allowed + ${result.extraAllowed})\n`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
