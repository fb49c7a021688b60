/**
 * A READ larger than one piece is streamed; when the image fails after the
 * first piece has gone out, a structured reply ends with an error chunk (and
 * the connection goes on), while a simple reply, whose data cannot be taken
 * back, ends the connection. Paths a well-behaved image never takes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { ImageBacking, NbdClient, NbdServer, type NbdBacking } from '../src/nbd/index.js';
import { NbdRequestError } from '../src/nbd/errors.js';
import { NBD_EIO } from '../src/nbd/protocol.js';
import { STREAM_PIECE } from '../src/nbd/server-transmission.js';
import { makeTempDir } from './helpers/nbd-harness.js';
import { openRawFile } from './helpers/nbd-raw-file.js';
import { closed, rawConnect, readRequest } from './helpers/nbd-raw-client.js';

const MIB = 1024 * 1024;
const BAD_FROM = BigInt(3 * MIB); // reads at or past this offset fail

/** The plaintext backing, except that reads from BAD_FROM on fail with EIO. */
function failingAbove(inner: NbdBacking): NbdBacking {
  const fail = (offset: bigint, length: number): void => {
    if (offset + BigInt(length) > BAD_FROM) throw new NbdRequestError(NBD_EIO, 'injected read failure');
  };
  return Object.assign(Object.create(inner) as NbdBacking, {
    read: async (offset: bigint, length: number) => {
      fail(offset, length);
      return inner.read(offset, length);
    },
    readSparse: async (offset: bigint, length: number) => {
      fail(offset, length);
      return inner.readSparse!(offset, length);
    },
  });
}

describe('a streamed READ that fails part-way', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let server: NbdServer;
  let socketPath: string;
  let model: Buffer;

  beforeAll(async () => {
    tmp = await makeTempDir();
    const file = join(tmp.dir, 'disk.raw');
    model = randomBytes(8 * MIB);
    await writeFile(file, model);
    socketPath = join(tmp.dir, 'nbd.sock');
    server = new NbdServer(failingAbove(await ImageBacking.open(await openRawFile(file), { readOnly: true })));
    await server.listen({ socketPath });
  });
  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('structured replies: data chunks, then an error chunk; the connection still serves', async () => {
    expect(STREAM_PIECE).toBeLessThan(Number(BAD_FROM));
    const client = await NbdClient.connect(`nbd+unix:///?socket=${socketPath}`);
    try {
      expect(client.structuredReplies).toBe(true);
      await expect(client.read(0n, new Uint8Array(6 * MIB), { maxRequest: 6 * MIB })).rejects.toMatchObject({ errno: NBD_EIO });
      const ok = new Uint8Array(2 * MIB);
      await client.read(0n, ok, { maxRequest: 2 * MIB });
      expect(Buffer.from(ok).equals(model.subarray(0, 2 * MIB))).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('simple replies: the header and the first pieces went out, so the connection is closed', async () => {
    const { socket } = await rawConnect({ socketPath });
    const got: Buffer[] = [];
    (socket as Socket).on('data', (c: Buffer) => got.push(c));
    socket.write(readRequest(1n, 0n, 6 * MIB));
    socket.resume();
    await closed(socket);
    const bytes = Buffer.concat(got);
    expect(bytes.readUInt32BE(4)).toBe(0); // the reply had started as a success
    expect(bytes.length).toBeLessThan(16 + 6 * MIB);
    expect(bytes.subarray(16).equals(model.subarray(0, bytes.length - 16))).toBe(true);
  });
});
