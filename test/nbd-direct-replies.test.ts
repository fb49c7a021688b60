/**
 * The native reply thread (native/nbd_direct_read.cc) under the faults it
 * must survive: a client that stops reading, an image that shrinks under the
 * server, and misuse of the addon's classes. Data is checked against
 * node:crypto's aes-xts (test/helpers/xts-plain64.ts); every wait has a deadline.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createXts } from '../src/crypto/index.js';
import { nativeDirectRead } from '../src/crypto/native-backend.js';
import { DirectReadFile, MAX_REPLY_THREADS } from '../src/nbd/direct-replies.js';
import { EncryptedBacking, NbdClient, NbdServer } from '../src/nbd/index.js';
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
  s.pause();
  for (let i = 0; i < reads; i++) {
    const r = Buffer.alloc(28);
    r.writeUInt32BE(0x25609513, 0);
    r.writeUInt16BE(0, 6); // READ
    r.writeBigUInt64BE(BigInt(i + 1), 8);
    r.writeBigUInt64BE(BigInt((i * readBytes) % SIZE), 16);
    r.writeUInt32BE(readBytes, 24);
    s.write(r);
  }
  return s;
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
    // 16 replies of 4 MiB: far more than the socket buffers hold, so its reply thread blocks in poll().
    const stalled = await stalledClient(sock, 16, 4 * 1024 * 1024);
    try {
      await new Promise((r) => setTimeout(r, 200));
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
      gone.resume(); // take a little, then vanish mid-reply
      await new Promise((r) => setTimeout(r, 20 * i));
      gone.destroy();
    }
    const out = join(tmp.dir, 'after.raw');
    await within(20_000, 'qemu-img convert after the disconnects', runOk('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]));
    expect((await readFile(out)).equals(plain)).toBe(true);
    const settle = Date.now() + 5000;
    while (server!.connectionCount > 0 && Date.now() < settle) await new Promise((r) => setTimeout(r, 20));
    expect(server!.connectionCount).toBe(0);
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

  it('the addon checks what it is given', () => {
    const addon = nativeDirectRead()!;
    expect(() => new addon.ReplySender({} as never, 0, () => undefined)).toThrow(expect.objectContaining({ code: 'XTS_BAD_ARG' }));
    const key = randomBytes(64);
    const f = DirectReadFile.open(file, key, createXts(key).kernel)!;
    f.dispose();
    expect(() => new addon.ReplySender(f.native, 0, () => undefined)).toThrow(expect.objectContaining({ code: 'XTS_DISPOSED' }));
    expect(() => new addon.DirectReadFile(Buffer.alloc(64), 'aesni', 0)).toThrow(expect.objectContaining({ code: 'XTS_EQUAL_KEY_HALVES' }));
    expect(() => new addon.DirectReadFile(randomBytes(48), 'aesni', 0)).toThrow(expect.objectContaining({ code: 'XTS_BAD_KEY' }));
  });
});
