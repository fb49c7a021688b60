/**
 * The native reply thread (native/nbd_direct_read.cc) under the faults it
 * must survive: a client that stops reading, an image that shrinks under the
 * server, and misuse of the addon's classes. Data is checked against
 * node:crypto's aes-xts (test/helpers/xts-plain64.ts); every wait has a deadline.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createXts } from '../src/crypto/index.js';
import { nativeReplies } from '../src/nbd/native-replies.js';
import { nativeKernels } from '../src/crypto/native-backend.js';
import { nativeAddon } from '../src/native-addon.js';
import { DirectReadFile, MAX_REPLY_THREADS, socketFd } from '../src/nbd/direct-replies.js';
import { EncryptedBacking, NbdClient, NbdError, NbdServer } from '../src/nbd/index.js';
import { NbdNativeIoError } from '../src/nbd/errors.js';
import { ensureDist } from './fixtures/vault/dist.js';
import { plainLayout } from '../src/volume/index.js';
import { makeTempDir, runOk } from './helpers/nbd-harness.js';
import { openRawFile } from './helpers/nbd-raw-file.js';
import { xtsPlain64 } from './helpers/xts-plain64.js';

const SIZE = 8 * 1024 * 1024;

function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Oldstyle-free minimal client (proto.md "Fixed newstyle negotiation", NBD_OPT_EXPORT_NAME with NO_ZEROES) that then never reads. */
async function stalledClient(path: string, reads: number, readBytes: number): Promise<Socket> {
  const s = connect(path);
  let got = Buffer.alloc(0);
  const need = async (n: number): Promise<Buffer> => {
    while (got.length < n) await new Promise((r) => s.once('data', (c: Buffer) => r((got = Buffer.concat([got, c])))));
    const out = got.subarray(0, n);
    got = got.subarray(n);
    return out;
  };
  await new Promise((r, j) => s.once('connect', r).once('error', j));
  await need(18); // NBDMAGIC, IHAVEOPT, handshake flags
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(3); // FIXED_NEWSTYLE | NO_ZEROES
  const opt = Buffer.alloc(16);
  opt.writeBigUInt64BE(0x49484156454f5054n, 0);
  opt.writeUInt32BE(1, 8); // NBD_OPT_EXPORT_NAME, empty name
  s.write(Buffer.concat([flags, opt]));
  await need(10); // export size and transmission flags
  for (let i = 0; i < reads; i++) {
    const r = Buffer.alloc(28);
    r.writeUInt32BE(0x25609513, 0);
    r.writeUInt16BE(0, 6); // READ
    r.writeBigUInt64BE(BigInt(i + 1), 8);
    r.writeBigUInt64BE(BigInt((i * readBytes) % SIZE), 16);
    r.writeUInt32BE(readBytes, 24);
    s.write(r);
  }
  await need(16); // the first reply's header: its reply thread is sending
  s.pause();
  return s;
}

/** Resolves once `cond()` holds, re-checked on every turn of the event loop; rejects after `ms` (a deadline, not a sleep). */
async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

describe('native reply thread', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let file: string;
  let plain: Buffer;
  let server: NbdServer | null = null;
  let uri: string;
  let sock: string;

  beforeEach(async () => {
    tmp = await makeTempDir();
    plain = randomBytes(SIZE);
    const key = Buffer.from(randomBytes(64));
    file = join(tmp.dir, 'disk.enc');
    await writeFile(file, xtsPlain64(true, key, plain, 4096, 0n, 8n));
    const xts = createXts(key);
    const directFile = DirectReadFile.open(file, key, xts.kernel);
    key.fill(0);
    expect(directFile).not.toBeNull();
    const layout = plainLayout(BigInt(SIZE), 4096);
    // One test here opens more connections from this process than there are reply threads: lift the per-peer cap.
    server = new NbdServer(await EncryptedBacking.open(await openRawFile(file), xts, layout, { readOnly: true, directFile: directFile! }), {
      maxConnectionsPerPeer: MAX_REPLY_THREADS + 2,
    });
    sock = join(tmp.dir, 'nbd.sock');
    uri = await server.listen({ socketPath: sock });
  });
  afterEach(async () => {
    await server?.close();
    server = null;
    await tmp.cleanup();
  });

  it('a client that stops reading holds up only itself, and close() still returns', async () => {
    // 16 replies of 4 MiB: far more than the socket buffers hold, so once its first reply has started (stalledClient
    // waits for that) and it stops reading, its reply thread blocks in poll().
    const stalled = await stalledClient(sock, 16, 4 * 1024 * 1024);
    try {
      const out = join(tmp.dir, 'out.raw');
      await within(20_000, 'qemu-img convert beside a stalled client', runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]));
      expect((await readFile(out)).equals(plain)).toBe(true);
      await within(5_000, 'server.close() with a stalled client', server!.close());
      server = null;
    } finally {
      stalled.destroy();
    }
  });

  it('a client that disconnects while its replies are being sent: the server drops only that connection', async () => {
    for (let i = 0; i < 5; i++) {
      const gone = await stalledClient(sock, 16, 4 * 1024 * 1024);
      // Take a little (i more chunks each time), then vanish mid-reply.
      for (let k = 0; k < i; k++) {
        const chunk = once(gone, 'data');
        gone.resume();
        await chunk;
        gone.pause();
      }
      gone.destroy();
    }
    const out = join(tmp.dir, 'after.raw');
    await within(20_000, 'qemu-img convert after the disconnects', runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]));
    expect((await readFile(out)).equals(plain)).toBe(true);
    await until(() => server!.connectionCount === 0, 'the server to drop the vanished connections');
  });

  it('close() returns while a client that stopped reading holds a reply, even on a socket handed over in blocking mode', async () => {
    // A child's extra stdio pipe is one end of a socketpair that libuv leaves in blocking mode in the child; the
    // reply thread there sends one 8 MiB reply (far more than the socket buffers hold) to this process, which
    // reads the first bytes and then stops. The thread must wait for the socket in poll(), where close() wakes
    // it: a sendmsg blocked on the stalled client would never return, and close() would wait forever.
    const loader = pathToFileURL(join(ensureDist(true), '..', '..', 'nbd', 'native-replies.js')).href;
    const key = randomBytes(64);
    const script = `
      const { openSync, closeSync } = require('node:fs');
      import(${JSON.stringify(loader)}).then((m) => {
        const addon = m.nativeReplies();
        const fd = openSync(process.argv[1], 'r');
        const file = new addon.DirectReadFile(Buffer.from(process.argv[3], 'hex'), process.argv[2], fd);
        closeSync(fd);
        const sender = new addon.ReplySender(file, 3, () => undefined);
        sender.send(Buffer.alloc(8 << 20, 0x5a));
        process.on('message', () => {
          sender.close();
          file.dispose();
          process.send('closed', () => process.exit(0));
        });
      });`;
    const child = spawn(process.execPath, ['-e', script, file, createXts(key).kernel, key.toString('hex')], { stdio: ['ignore', 'inherit', 'inherit', 'pipe', 'ipc'] });
    key.fill(0);
    const peer = child.stdio[3] as Socket;
    try {
      const [first] = (await within(10_000, 'the first reply bytes', once(peer, 'data'))) as [Buffer];
      peer.pause();
      expect(first[0]).toBe(0x5a);
      const exited = once(child, 'exit');
      child.send('close');
      const [code] = await within(10_000, "the reply thread's close() beside a stalled client", exited);
      expect(code).toBe(0);
    } finally {
      child.kill('SIGKILL');
      peer.destroy();
    }
  });

  it("the key schedule is in the addon's wipe-on-exit registry until the export closes and its last reply thread lets go", async () => {
    const live = nativeAddon()!.liveKeySchedules as () => number;
    const key = randomBytes(64);
    const before = live();
    const f = DirectReadFile.open(file, key, nativeKernels()[0]!)!;
    expect(live()).toBe(before + 1);
    const listener = createServer();
    const listenPath = join(tmp.dir, 'pair.sock');
    await new Promise<void>((r) => listener.listen(listenPath, r));
    const accepted = once(listener, 'connection');
    const far = connect(listenPath);
    const [near] = (await accepted) as [Socket];
    try {
      const { ReplySender } = nativeReplies()!;
      const sender = new ReplySender(f.native, socketFd(near)!, () => undefined);
      f.dispose();
      expect(live()).toBe(before + 1); // the reply thread still reads with it
      sender.close();
      expect(live()).toBe(before);
    } finally {
      near.destroy();
      far.destroy();
      await new Promise((r) => listener.close(r));
    }

    // The server's export: its XtsKey and its DirectReadFile, both released by close() once its connections end.
    const client = await NbdClient.connect(uri);
    await client.read(0n, new Uint8Array(65536));
    await client.close();
    const open = live();
    await server!.close();
    server = null;
    await until(() => live() === open - 2, 'the export to release its key schedules');
  });

  it('more clients than reply threads: the rest are served on the main thread, all correctly', async () => {
    const threads = async (): Promise<number> => Number(/Threads:\s+(\d+)/.exec(await readFile('/proc/self/status', 'utf8'))![1]);
    const before = await threads();
    const clients = await Promise.all(Array.from({ length: MAX_REPLY_THREADS + 2 }, () => NbdClient.connect(uri)));
    try {
      // Replies start flowing once the handshake has left the socket; let every connection get there.
      const reads = clients.map(async (c, i) => {
        const off = (i * 65536) % SIZE;
        const buf = new Uint8Array(65536);
        await within(10_000, `read on connection ${i}`, c.read(BigInt(off), buf));
        expect(Buffer.from(buf).equals(plain.subarray(off, off + 65536))).toBe(true);
      });
      await Promise.all(reads);
      expect((await threads()) - before).toBe(MAX_REPLY_THREADS);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  it('an image that shrinks under the server: EIO for what is gone, the same connection reads the rest', async () => {
    const client = await NbdClient.connect(uri);
    try {
      await truncate(file, SIZE / 2);
      const gone = new Uint8Array(65536);
      await expect(within(5_000, 'read past the new end', client.read(BigInt(SIZE - 65536), gone))).rejects.toMatchObject({ code: 'NBD_SERVER_ERROR', errno: 5 });
      const kept = new Uint8Array(65536);
      await within(5_000, 'read before the new end', client.read(4096n, kept));
      expect(Buffer.from(kept).equals(plain.subarray(4096, 4096 + 65536))).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('the addon checks what it is given: its own codes for arguments and failed system calls, the XTS codes for keys', () => {
    const addon = nativeReplies()!;
    const refused = (fn: () => unknown): NbdError => {
      try {
        fn();
      } catch (e) {
        return e as NbdError;
      }
      throw new Error('expected a throw');
    };
    for (const e of [refused(() => new addon.ReplySender({} as never, 0, () => undefined)), refused(() => new addon.DirectReadFile(randomBytes(64), 'aesni', -1))]) {
      expect(e).toBeInstanceOf(NbdError);
      expect(e.code).toBe('NBD_NATIVE_BAD_ARG');
    }
    const key = randomBytes(64);
    const kernel = createXts(key).kernel;
    const f = DirectReadFile.open(file, key, kernel)!;
    try {
      // A descriptor number nothing has open: dup() fails with EBADF, an I/O error carrying the errno, not a bad argument.
      const unused = 1_000_000;
      for (const e of [refused(() => new addon.DirectReadFile(key, kernel, unused)), refused(() => new addon.ReplySender(f.native, unused, () => undefined))]) {
        expect(e).toBeInstanceOf(NbdNativeIoError);
        expect(e).toMatchObject({ code: 'NBD_NATIVE_IO', errnoName: 'EBADF' });
        expect(e.message).toMatch(/cannot duplicate the (image|socket) descriptor: .*\(EBADF\)/);
      }
    } finally {
      f.dispose();
    }
    expect(refused(() => new addon.ReplySender(f.native, 0, () => undefined))).toMatchObject({ code: 'NBD_NATIVE_BAD_ARG', message: expect.stringMatching(/disposed/) });
    expect(() => new addon.DirectReadFile(Buffer.alloc(64), 'aesni', 0)).toThrow(expect.objectContaining({ code: 'XTS_EQUAL_KEY_HALVES' }));
    // A process that loads nothing but the reply thread's module gets typed errors too: the one loader installs the
    // error factory before it hands the addon out, whoever asks first.
    const dist = join(ensureDist(true), '..', '..');
    const probe = `import(${JSON.stringify(pathToFileURL(join(dist, 'nbd', 'native-replies.js')).href)}).then(async (m) => {
      const errors = await import(${JSON.stringify(pathToFileURL(join(dist, 'nbd', 'errors.js')).href)});
      try { new (m.nativeReplies().DirectReadFile)(require('node:crypto').randomBytes(64), process.argv[1], 1000000); }
      catch (e) { console.log((e instanceof errors.NbdNativeIoError) + ':' + e.code + ':' + e.errnoName); }
    });`;
    const r = spawnSync(process.execPath, ['-e', probe, kernel], { encoding: 'utf8' });
    expect(r.stdout.trim(), r.stderr).toBe('true:NBD_NATIVE_IO:EBADF');
    expect(() => new addon.DirectReadFile(randomBytes(48), 'aesni', 0)).toThrow(expect.objectContaining({ code: 'XTS_BAD_KEY' }));
  });
});
