/**
 * Connection budgets: a client that finishes the handshake and then sits idle
 * is dropped after the idle timeout (one with replies unread is not idle), and
 * one peer (a TCP address, a Unix socket's uid from SO_PEERCRED) cannot hold
 * more than its share of connections while another peer is still served.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { ImageBacking, NbdServer } from '../src/nbd/index.js';
import { makeTempDir, run, runOk } from './helpers/nbd-harness.js';
import { openRawFile } from './helpers/nbd-raw-file.js';
import { closed, rawConnect, readRequest } from './helpers/nbd-raw-client.js';
import { startServe } from './helpers/nbd-serve-cli.js';

const MIB = 1024 * 1024;
const SIZE = 32 * MIB;

/** Read exactly n bytes from a (paused) socket. */
function take(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      const need = n - got;
      const rest = c.length > need ? c.subarray(need) : null;
      parts.push(rest === null ? c : c.subarray(0, need));
      got += Math.min(c.length, need);
      if (got < n) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      if (rest !== null) socket.unshift(rest); // paused, so it waits for the next take()
      resolve(Buffer.concat(parts));
    };
    const onClose = (): void => reject(new Error(`closed after ${got} of ${n} bytes`));
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.resume();
  });
}

/** Wait until `cond` holds, re-checking on every turn of the event loop (no fixed sleep decides the outcome). */
async function until(cond: () => boolean, what: string, limitMs = 10_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

let tmp: { dir: string; cleanup: () => Promise<void> };
let file: string;
let model: Buffer;

beforeAll(async () => {
  tmp = await makeTempDir();
  await chmod(tmp.dir, 0o755); // the Unix-peer test connects as another user
  file = join(tmp.dir, 'disk.raw');
  model = randomBytes(SIZE);
  await writeFile(file, model);
});
afterAll(async () => {
  await tmp?.cleanup();
});

async function startServer(opts: ConstructorParameters<typeof NbdServer>[1], endpoint: Parameters<NbdServer['listen']>[0]): Promise<NbdServer> {
  const server = new NbdServer(await ImageBacking.open(await openRawFile(file), { readOnly: true }), opts);
  await server.listen(endpoint);
  return server;
}

describe('idle timeout', () => {
  it('drops a client idle after the handshake, but not one whose replies wait to be read', async () => {
    const socketPath = join(tmp.dir, 'idle.sock');
    const server = await startServer({ idleTimeoutMs: 300 }, { socketPath });
    try {
      // B: 8 READs of 4 MiB, replies left unread (more than the socket buffers hold) — busy, not idle.
      const busy = await rawConnect({ socketPath });
      for (let i = 0; i < 8; i++) busy.socket.write(readRequest(BigInt(i + 1), BigInt(i * 4 * MIB), 4 * MIB));
      // A: connects after B has queued its work, then does nothing.
      const idle = await rawConnect({ socketPath });
      idle.socket.resume(); // read, so the close is seen
      await closed(idle.socket);
      // B's timer, had it been idle, would have fired before A's: it must still be served, every byte right.
      expect(busy.socket.destroyed).toBe(false);
      for (let i = 0; i < 8; i++) {
        const head = await take(busy.socket, 16);
        expect(head.readUInt32BE(4)).toBe(0); // no error
        const cookie = Number(head.readBigUInt64BE(8));
        const data = await take(busy.socket, 4 * MIB);
        expect(data.equals(model.subarray((cookie - 1) * 4 * MIB, cookie * 4 * MIB))).toBe(true);
      }
      // Now B has nothing in flight and nothing unread: it too is dropped.
      busy.socket.resume();
      await closed(busy.socket);
    } finally {
      await server.close();
    }
  });

  it('vhdcrypt serve --idle-timeout drops an idle client, --max-connections-per-peer caps the whole server; bad values are usage errors', async () => {
    const socketPath = join(tmp.dir, 'cli-idle.sock');
    const serve = await startServe([file, '--plaintext', '--socket', socketPath, '--idle-timeout', '0.3']);
    try {
      const idle = await rawConnect({ socketPath });
      idle.socket.resume();
      await closed(idle.socket);
    } finally {
      expect(await serve.stop()).toBe(0);
    }
    // One process serves every connection, so the per-peer cap holds for the whole server: the second is refused.
    const capSocket = join(tmp.dir, 'cli-cap.sock');
    const capped = await startServe([file, '--plaintext', '--socket', capSocket, '--idle-timeout', '0', '--max-connections-per-peer', '1']);
    try {
      const held = await rawConnect({ socketPath: capSocket });
      try {
        await expect(rawConnect({ socketPath: capSocket })).rejects.toThrow(/connection closed/);
      } finally {
        held.socket.destroy();
      }
    } finally {
      expect(await capped.stop()).toBe(0);
    }
    const bad = await run(process.execPath, [join(__dirname, '..', 'bin', 'vhdcrypt.cjs'), 'serve', file, '--idle-timeout', 'soon']);
    expect(bad.code).toBe(2);
    const badCap = await run(process.execPath, [join(__dirname, '..', 'bin', 'vhdcrypt.cjs'), 'serve', file, '--max-connections-per-peer', '0']);
    expect(badCap.code).toBe(2);
  });
});

describe('per-peer connection cap', () => {
  it('TCP: the third connection from 127.0.0.1 is refused while 127.0.0.2 is served', async () => {
    const server = await startServer({ maxConnectionsPerPeer: 2, idleTimeoutMs: 0 }, { port: 0, host: '127.0.0.1' });
    const port = Number(new URL(server.uri.replace(/^nbd:/, 'http:')).port);
    const open: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) open.push((await rawConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' })).socket);
      await expect(rawConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' })).rejects.toThrow(/connection closed/);
      const other = await rawConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
      expect(other.size).toBe(BigInt(SIZE));
      open.push(other.socket);
      // A slot given back is a slot free again.
      open.shift()!.destroy();
      await until(() => server.connectionCount === 2, 'the server to see the close');
      open.push((await rawConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.1' })).socket);
    } finally {
      for (const s of open) s.destroy();
      await server.close();
    }
  });

  // Connecting as another uid needs root (setpriv); elsewhere only the TCP case runs.
  it.skipIf(process.getuid?.() !== 0)('Unix socket: the peer is its uid (SO_PEERCRED): root is capped while nobody is served', async () => {
    const socketPath = join(tmp.dir, 'peer.sock');
    const server = await startServer({ maxConnectionsPerPeer: 2, idleTimeoutMs: 0 }, { socketPath });
    await chmod(socketPath, 0o777);
    const open: Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) open.push((await rawConnect({ socketPath })).socket);
      await expect(rawConnect({ socketPath })).rejects.toThrow(/connection closed/);
      const asRoot = await run('nbdinfo', ['--size', server.uri]);
      expect(asRoot.code).not.toBe(0);
      const asNobody = await runOk('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'nbdinfo', '--size', server.uri]);
      expect(asNobody.stdout.toString().trim()).toBe(String(SIZE));
    } finally {
      for (const s of open) s.destroy();
      await server.close();
    }
  });
});
