/**
 * The native reply thread re-checks its queue rather than trust the JS side:
 * a client that reads nothing while replies keep being queued fails the
 * connection once the queue passes 1024 replies or 64 MiB, instead of the
 * queue growing without bound.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createXts } from '../src/crypto/index.js';
import { nativeReplies } from '../src/nbd/native-replies.js';
import { DirectReadFile, socketFd } from '../src/nbd/direct-replies.js';
import { makeTempDir } from './helpers/nbd-harness.js';

const addon = nativeReplies();

describe.skipIf(addon === undefined)('native reply queue bound', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let file: DirectReadFile;
  let server: Server;
  let socketPath: string;

  beforeAll(async () => {
    tmp = await makeTempDir();
    const path = join(tmp.dir, 'disk');
    await writeFile(path, randomBytes(65536));
    const key = randomBytes(64);
    file = DirectReadFile.open(path, key, createXts(key).kernel)!;
    socketPath = join(tmp.dir, 's.sock');
    server = createServer();
    await new Promise<void>((r) => server.listen(socketPath, r));
  });
  afterAll(async () => {
    file?.dispose();
    await new Promise((r) => server?.close(r));
    await tmp?.cleanup();
  });

  /** A connected pair: the server end (for the sender) and a client end that never reads. */
  async function pair(): Promise<{ near: Socket; far: Socket }> {
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const far = connect(socketPath);
    far.pause();
    const near = await accepted;
    return { near, far };
  }

  it.each([
    ['replies', 4000, 1024],
    ['bytes', 100, 1024 * 1024],
  ] as const)('past its bound in %s, the connection fails', async (_what, count, size) => {
    const { near, far } = await pair();
    let failure: string | undefined;
    let onFailure!: () => void;
    const failed = new Promise<void>((r) => (onFailure = r));
    const sender = new addon!.ReplySender(file.native, socketFd(near)!, (_n, f) => {
      if (f !== undefined && failure === undefined) {
        failure = f;
        onFailure();
      }
    });
    try {
      const reply = new Uint8Array(size);
      let refused = false;
      for (let i = 0; i < count && !refused; i++) refused = !sender.send(reply);
      expect(refused).toBe(true);
      await failed;
      expect(failure).toMatch(/reply queue is over its bound/);
    } finally {
      sender.close();
      near.destroy();
      far.destroy();
    }
  });
});
