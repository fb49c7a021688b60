/**
 * Clients that queue large READs and never read the replies must not make
 * the server hold their replies: 100 of them (connect, handshake, 16 READs of
 * 32 MiB, or of 1 MiB for every other one, then read only the first reply's header, to know the server is
 * answering, and nothing more) against one `vhdcrypt serve` process, whose
 * peak RSS (VmHWM) must stay under 512 MiB while a well-behaved client still
 * reads correct data; once they have gone, while the well-behaved client stays
 * connected, its RSS must come back under 256 MiB. Before the budgets each such
 * client pinned 512 MiB, and the memory stayed after they left; the buffers
 * they held are freed when their connections close, not when a major GC runs
 * (an idle Node 24 ran none within 90 s, and stayed near 280 MiB).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createImage } from '../src/image/index.js';
import { format, KDF_RANDOM_SECRET } from '../src/luks/index.js';
import { NbdClient } from '../src/nbd/index.js';
import { makeTempDir, runOk } from './helpers/nbd-harness.js';
import { rawConnect, readRequest } from './helpers/nbd-raw-client.js';
import { startServe, type ServeProcess } from './helpers/nbd-serve-cli.js';

const MIB = 1024 * 1024;
const PASS = 'memory test passphrase';
const BAD_CLIENTS = Number(process.env.VHDCRYPT_TEST_BAD_CLIENTS ?? 100);
const PEAK_BOUND = 512 * MIB;
const AFTER_BOUND = 256 * MIB;

async function memory(pid: number): Promise<{ rss: number; hwm: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)![1]) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** Resolves once `n` bytes have arrived (then the socket is paused again and the rest left unread). */
function firstBytes(socket: Socket, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (c: Buffer): void => {
      got += c.length;
      if (got < n) return;
      socket.off('data', onData);
      socket.pause();
      resolve();
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('the server closed a misbehaving client instead of holding back')));
    socket.resume();
  });
}

let tmp: { dir: string; cleanup: () => Promise<void> };
let file: string;
let passFile: string;
let model: Buffer;

beforeAll(async () => {
  tmp = await makeTempDir();
  file = join(tmp.dir, 'enc.vhd');
  const img = await createImage(file, { format: 'vhd-fixed', virtualSize: BigInt(48 * MIB) });
  const f = await format(img.virtualSize, { version: 2, keyBits: 512, sectorSize: 4096, kdf: KDF_RANDOM_SECRET, passphrase: PASS });
  await img.write(0n, f.header);
  await img.close();
  passFile = join(tmp.dir, 'pass');
  await writeFile(passFile, PASS);
  const serve = await startServe([file, '--passphrase-file', passFile, '--writable', '--socket', join(tmp.dir, 'fill.sock')]);
  try {
    const size = Number((await runOk('nbdinfo', ['--size', serve.uri])).stdout.toString().trim());
    model = randomBytes(size);
    await writeFile(join(tmp.dir, 'model.raw'), model);
    await runOk('nbdcopy', [join(tmp.dir, 'model.raw'), serve.uri]);
  } finally {
    await serve.stop();
  }
});
afterAll(async () => {
  await tmp?.cleanup();
});

// '--no-reply-threads': every reply from the main thread; default: native reply threads for the first 64 connections.
describe.each([['main thread', ['--no-reply-threads']], ['reply threads', []]] as const)('replies on the %s', (_name, extra) => {
  it(`${BAD_CLIENTS} clients that never read: peak RSS under 512 MiB, a good client served, memory back under 256 MiB after`, async () => {
    const socketPath = join(tmp.dir, 'mem.sock');
    const serve: ServeProcess = await startServe([file, '--read-only', '--passphrase-file', passFile, '--socket', socketPath, '--max-connections-per-peer', '128', '--idle-timeout', '0', ...extra]);
    const pid = serve.child.pid!;
    const bad: Socket[] = [];
    try {
      const good = await NbdClient.connect(serve.uri);
      // Both kinds of READ: streamed (32 MiB) and held whole within the budgets (512 KiB).
      const check = async (): Promise<void> => {
        for (const maxRequest of [32 * MIB, 512 * 1024]) {
          const got = new Uint8Array(model.length);
          await good.read(0n, got, { maxRequest, inFlight: 8 });
          expect(Buffer.from(got).equals(model)).toBe(true);
        }
      };
      await check();
      const baseline = await memory(pid);
      for (let i = 0; i < BAD_CLIENTS; i++) {
        const { socket } = await rawConnect({ socketPath });
        bad.push(socket);
        // Half of them ask for replies that are streamed (32 MiB), half for ones held whole (1 MiB).
        const length = i % 2 === 0 ? 32 * MIB : MIB;
        const reqs = Array.from({ length: 16 }, (_, k) => readRequest(BigInt(k + 1), length === MIB ? BigInt(k * MIB) : 0n, length));
        socket.write(Buffer.concat(reqs));
      }
      // Every misbehaving client is being answered: the server has taken its requests on.
      await Promise.all(bad.map((s) => firstBytes(s, 16)));
      await check(); // a well-behaved client is still served, correctly
      const during = await memory(pid);
      for (const s of bad.splice(0)) s.destroy();
      // Wait (bounded) for the server to give the memory back: the closes are handled one by one, each connection's
      // reply buffers freed once its requests have settled, then glibc's free pages go back through trimHeap.
      const left = Date.now();
      const deadline = left + 90_000;
      let after = await memory(pid);
      while (after.rss >= AFTER_BOUND && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        after = await memory(pid);
      }
      await check(); // the good client stayed connected throughout, and is still served
      await good.close();
      console.log(`serve ${_name}: baseline RSS ${(baseline.rss / MIB).toFixed(0)} MiB, peak ${(during.hwm / MIB).toFixed(0)} MiB with ${BAD_CLIENTS} clients, ${(after.rss / MIB).toFixed(0)} MiB ${((Date.now() - left) / 1000).toFixed(1)} s after they left`);
      expect(during.hwm).toBeLessThan(PEAK_BOUND);
      expect(after.rss).toBeLessThan(AFTER_BOUND);
    } finally {
      for (const s of bad) s.destroy();
      expect(await serve.stop()).toBe(0);
    }
  }, 300_000);
});
