/**
 * npm run bench:nbd [-- --size MiB] [--runs N] [--json]
 * Whole-process runs, median of N, peers measured in the same run (the read
 * servers run side by side and their nbdcopy runs take turns):
 *  - read a LUKS1 image in full with `nbdcopy URI null:` served by
 *    `vhdcrypt serve` vs `nbdkit file X --filter=luks` (target: ours
 *    >= 1.5x faster) and vs `nbdkit file PLAIN` (transport floor; target: our
 *    time <= 1.6x);
 *  - write the same size through the server with nbdcopy, beside qemu-nbd's
 *    luks driver over a LUKS1 image.
 * The LUKS1 image is made with our luks.format (PBKDF2, low cost) and a
 * payload encrypted by the crypto core. Default 2048 MiB; --size 256 while developing.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createXts } from '../src/crypto/index.js';
import { format, KDF_RANDOM_SECRET } from '../src/luks/index.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
};
const json = process.argv.includes('--json');
const sizeMiB = Number(arg('--size', '2048'));
const runs = Number(arg('--runs', '3'));
const root = join(fileURLToPath(import.meta.url), '..', '..', '..');
const cli = join(root, 'bin', 'vhdcrypt.cjs');
const dir = mkdtempSync(join(arg('--dir', tmpdir()), 'vhdcrypt-nbd-bench-'));
const PASS = 'nbd-bench-passphrase';
const env = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Start a server process and wait (bounded) until its Unix socket exists. */
async function startServer(cmd: string, args: string[], sock: string): Promise<ChildProcess> {
  rmSync(sock, { force: true });
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'] });
  const deadline = Date.now() + 30_000;
  while (!existsSync(sock)) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited (${child.exitCode})`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${cmd}: no socket after 30 s`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(t);
}

function nbdcopy(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync('nbdcopy', args, { env, encoding: 'utf8' });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`nbdcopy ${args.join(' ')} failed: ${r.stderr}`);
  return s;
}

/** Median seconds of nbdcopy writes, each against a server started on a freshly reset target. */
async function measure(label: string, server: () => Promise<ChildProcess>, copyArgs: string[], before: () => void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    before();
    const child = await server();
    try {
      times.push(nbdcopy(copyArgs));
    } finally {
      await stopServer(child);
    }
  }
  const m = median(times);
  if (!json) process.stderr.write(`  ${label}: ${times.map((t) => t.toFixed(2)).join(' ')} s -> median ${m.toFixed(2)} s\n`);
  return m;
}

async function main(): Promise<void> {
  const bytes = BigInt(sizeMiB) << 20n;
  const plain = join(dir, 'plain.raw');
  const enc = join(dir, 'enc.luks');
  const passFile = join(dir, 'pass');
  writeFileSync(passFile, PASS);

  // The same plaintext as a raw file and as a LUKS1 volume (header + payload).
  const f = await format(bytes + (2n << 20n), { version: 1, keyBits: 512, kdf: KDF_RANDOM_SECRET, passphrase: PASS });
  const xts = createXts(f.volumeKey);
  f.volumeKey.fill(0);
  const pfd = openSync(plain, 'w');
  const efd = openSync(enc, 'w');
  writeSync(efd, f.header, 0, f.header.length, 0);
  const dataOffset = Number(f.info.dataOffset);
  const chunk = new Uint8Array(4 << 20);
  const cipher = new Uint8Array(chunk.length);
  for (let off = 0; off < sizeMiB * 1048576; off += chunk.length) {
    randomFillSync(chunk);
    writeSync(pfd, chunk, 0, chunk.length, off);
    xts.encryptSectors(chunk, BigInt(off / 512), 512, { out: cipher });
    writeSync(efd, cipher, 0, cipher.length, dataOffset + off);
  }
  closeSync(pfd);
  closeSync(efd);
  xts.dispose();

  const sock = join(dir, 'nbd.sock');
  const uri = `nbd+unix:///?socket=${sock}`;
  if (!json) process.stderr.write(`nbd bench: ${sizeMiB} MiB, ${runs} runs each\n`);

  // The four read servers run side by side and their nbdcopy runs take turns,
  // so a slow spell of this shared machine falls on every peer alike.
  const readPeers: Array<{ label: string; cmd: string; args: (sock: string) => string[] }> = [
    { label: 'read: vhdcrypt serve (LUKS1)', cmd: process.execPath, args: (s) => [cli, 'serve', enc, '--passphrase-file', passFile, '--socket', s, '--read-only'] },
    { label: 'read: nbdkit file --filter=luks', cmd: 'nbdkit', args: (s) => ['--foreground', '-r', '-U', s, '--filter=luks', 'file', enc, `passphrase=${PASS}`] },
    { label: 'read: nbdkit file (plaintext, no crypto)', cmd: 'nbdkit', args: (s) => ['--foreground', '-r', '-U', s, 'file', plain] },
  ];
  const readTimes = readPeers.map(() => [] as number[]);
  const children: ChildProcess[] = [];
  try {
    for (const [k, p] of readPeers.entries()) {
      const s = join(dir, `read${k}.sock`);
      children.push(await startServer(p.cmd, p.args(s), s));
    }
    for (let i = 0; i < runs; i++) {
      for (let k = 0; k < readPeers.length; k++) readTimes[k]!.push(nbdcopy([`nbd+unix:///?socket=${join(dir, `read${k}.sock`)}`, 'null:']));
    }
  } finally {
    for (const c of children) await stopServer(c);
  }
  const [oursRead, nbdkitLuks, nbdkitPlain] = readTimes.map((times, k) => {
    const m = median(times);
    if (!json) process.stderr.write(`  ${readPeers[k]!.label}: ${times.map((t) => t.toFixed(2)).join(' ')} s -> median ${m.toFixed(2)} s\n`);
    return m;
  }) as [number, number, number];

  const target = join(dir, 'target.luks');
  const resetTarget = (): void => copyFileSync(enc, target);
  const oursWrite = await measure(
    'write: vhdcrypt serve (LUKS1)',
    () => startServer(process.execPath, [cli, 'serve', target, '--passphrase-file', passFile, '--socket', sock, '--writable'], sock),
    [plain, uri],
    resetTarget,
  );
  const qemuWrite = await measure(
    'write: qemu-nbd luks driver (LUKS1)',
    () =>
      startServer(
        'qemu-nbd',
        ['--object', `secret,id=s,data=${PASS}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${target}`, '-t', '--socket', sock, '--cache=writeback'],
        sock,
      ),
    [plain, uri],
    resetTarget,
  );

  const mbps = (s: number): number => sizeMiB / s;
  const result = {
    sizeMiB,
    runs,
    read: {
      vhdcryptSeconds: oursRead,
      nbdkitLuksSeconds: nbdkitLuks,
      nbdkitPlainSeconds: nbdkitPlain,
      speedupVsNbdkitLuks: nbdkitLuks / oursRead,
      ratioToTransportFloor: oursRead / nbdkitPlain,
    },
    write: { vhdcryptSeconds: oursWrite, qemuNbdLuksSeconds: qemuWrite, vhdcryptMiBps: mbps(oursWrite), qemuNbdMiBps: mbps(qemuWrite) },
  };
  if (json) {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }
  const row = (a: string, b: string, c: string, d: string): string => `| ${a.padEnd(40)} | ${b.padStart(9)} | ${c.padStart(9)} | ${d.padEnd(26)} |\n`;
  let t = row('nbdcopy, ' + sizeMiB + ' MiB', 'median s', 'MiB/s', 'ratio (target)');
  t += `|${'-'.repeat(42)}|${'-'.repeat(11)}|${'-'.repeat(11)}|${'-'.repeat(28)}|\n`;
  t += row('read: vhdcrypt serve (LUKS1)', oursRead.toFixed(2), mbps(oursRead).toFixed(0), '');
  t += row('read: nbdkit file --filter=luks', nbdkitLuks.toFixed(2), mbps(nbdkitLuks).toFixed(0), `ours ${(nbdkitLuks / oursRead).toFixed(2)}x faster (>= 1.5)`);
  t += row('read: nbdkit file, plaintext', nbdkitPlain.toFixed(2), mbps(nbdkitPlain).toFixed(0), `ours ${(oursRead / nbdkitPlain).toFixed(2)}x its time (<= 1.6)`);
  t += row('write: vhdcrypt serve (LUKS1)', oursWrite.toFixed(2), mbps(oursWrite).toFixed(0), '');
  t += row('write: qemu-nbd luks driver (LUKS1)', qemuWrite.toFixed(2), mbps(qemuWrite).toFixed(0), `ours ${(qemuWrite / oursWrite).toFixed(2)}x its speed`);
  process.stdout.write(t);
}

main()
  .catch((e: unknown) => {
    process.stderr.write(`bench:nbd failed: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
