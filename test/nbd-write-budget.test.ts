/**
 * WRITE payloads a client can make the server hold: while the image is slow
 * to take writes, a connection holds at most 64 MiB of payloads received and
 * not yet written (before: 16 requests x 32 MiB plus 64 MiB read ahead); the
 * rest waits in the client's socket. The backing here holds every write until
 * the server stops reading (or holds more than the budget), then lets them go;
 * every write must still land.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { ImageBacking, NbdServer, type NbdBacking } from '../src/nbd/index.js';
import * as P from '../src/nbd/protocol.js';
import { makeTempDir } from './helpers/nbd-harness.js';
import { openRawFile } from './helpers/nbd-raw-file.js';
import { rawConnect } from './helpers/nbd-raw-client.js';

const MIB = 1024 * 1024;
const PIECE = 8 * MIB;
const WRITES = 30;
const BUDGET = 64 * MIB;

describe('WRITE payload budget', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let file: string;

  beforeAll(async () => {
    tmp = await makeTempDir();
    file = join(tmp.dir, 'disk.raw');
    await writeFile(file, Buffer.alloc(PIECE * WRITES));
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it(`a connection holds at most ${BUDGET / MIB} MiB of unwritten payloads; all writes land`, async () => {
    const inner = await ImageBacking.open(await openRawFile(file));
    let pendingBytes = 0;
    let maxPending = 0;
    let gated = true;
    const held: Array<() => void> = [];
    const open = (): void => {
      gated = false;
      for (const go of held.splice(0)) go();
    };
    const backing: NbdBacking = Object.assign(Object.create(inner) as NbdBacking, {
      write: async (offset: bigint, data: Uint8Array, fua: boolean) => {
        pendingBytes += data.length;
        maxPending = Math.max(maxPending, pendingBytes);
        if (pendingBytes > BUDGET) open(); // over the budget: no need to wait longer to know
        if (gated) await new Promise<void>((r) => held.push(r));
        try {
          await inner.write(offset, data, fua);
        } finally {
          pendingBytes -= data.length;
        }
      },
    });
    const nbd = new NbdServer(backing, { idleTimeoutMs: 0 });
    let serverSide!: Socket;
    const listener: Server = createServer((s) => {
      serverSide = s;
      nbd.serveSocket(s);
    });
    const socketPath = join(tmp.dir, 'w.sock');
    await new Promise<void>((r) => listener.listen(socketPath, r));
    try {
      const { socket } = await rawConnect({ socketPath });
      const data = randomBytes(PIECE);
      const acks = new Promise<number[]>((resolve, reject) => {
        const errors: number[] = [];
        let buf = Buffer.alloc(0);
        socket.on('data', (c: Buffer) => {
          buf = Buffer.concat([buf, c]);
          while (buf.length >= 16) {
            errors.push(buf.readUInt32BE(4));
            buf = buf.subarray(16);
          }
          if (errors.length === WRITES) resolve(errors);
        });
        socket.once('close', () => reject(new Error('closed')));
      });
      socket.resume();
      for (let i = 0; i < WRITES; i++) {
        socket.write(P.encodeRequestHeader({ flags: 0, type: P.NBD_CMD_WRITE, cookie: BigInt(i + 1), offset: BigInt(i * PIECE), length: PIECE }));
        socket.write(data);
      }
      // Let the writes go once the server holds a full budget and has stopped reading (its socket paused). A server
      // over the budget has let them go already (see write above), and maxPending says so below.
      while (gated) {
        if (serverSide?.isPaused() && pendingBytes + PIECE > BUDGET) open();
        else await new Promise((r) => setTimeout(r, 5)); // a poll of the condition, not a delay that decides anything
      }
      const errors = await acks;
      expect(errors.every((e) => e === 0)).toBe(true);
      expect(maxPending).toBeLessThanOrEqual(BUDGET);
      const disk = await readFile(file);
      for (let i = 0; i < WRITES; i++) expect(disk.subarray(i * PIECE, (i + 1) * PIECE).equals(data)).toBe(true);
      socket.destroy();
    } finally {
      await nbd.close();
      await new Promise((r) => listener.close(r));
    }
  });
});
