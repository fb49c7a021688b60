/**
 * A small NBD client (proto.md): fixed newstyle negotiation with
 * STRUCTURED_REPLY, SET_META_CONTEXT base:allocation and OPT_GO (falling back
 * to EXPORT_NAME for old servers), then READ and BLOCK_STATUS with many
 * requests in flight. Every reply is checked against its request; a server
 * that breaks the protocol gets a hard disconnect and every pending request
 * fails with a typed error.
 */
import { connect, type Socket } from 'node:net';
import type { BlockStatusExtent } from './backing.js';
import { ByteReader } from './byte-reader.js';
import { NbdDisconnectedError, NbdError, NbdProtocolError, NbdServerError } from './errors.js';
import * as P from './protocol.js';
import { parseNbdUri, type NbdAddress } from './uri.js';

export interface NbdClientOptions {
  /** Give up connecting and negotiating after this long (default 15 s). */
  readonly connectTimeoutMs?: number;
}

interface Pending {
  readonly type: number;
  readonly offset: bigint;
  readonly length: number;
  readonly into: Uint8Array | null;
  readonly extents: BlockStatusExtent[];
  error: NbdServerError | null;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** Largest option reply or structured chunk we accept (a BLOCK_STATUS chunk may hold 2^20 extents). */
const MAX_REPLY_PAYLOAD = 64 * 1024 * 1024;

export class NbdClient {
  readonly size: bigint;
  readonly transmissionFlags: number;
  readonly blockSize: { minimum: number; preferred: number; maximum: number };
  readonly structuredReplies: boolean;
  private readonly allocationContextId: number | null;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: Error | null = null;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  private constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    n: Negotiated,
  ) {
    this.size = n.size;
    this.transmissionFlags = n.flags;
    this.blockSize = n.blockSize;
    this.structuredReplies = n.structured;
    this.allocationContextId = n.allocationContextId;
    void this.receiveLoop();
  }

  /** Connect to an NBD URI (nbd://HOST:PORT/EXPORT, nbd+unix:///EXPORT?socket=PATH) or a parsed address. */
  static async connect(target: string | NbdAddress, opts: NbdClientOptions = {}): Promise<NbdClient> {
    const addr = typeof target === 'string' ? parseNbdUri(target) : target;
    const socket = addr.kind === 'unix' ? connect(addr.socketPath) : connect({ host: addr.host, port: addr.port, noDelay: true });
    socket.on('error', () => undefined); // surfaced through ByteReader
    const reader = new ByteReader(socket, 2 * MAX_REPLY_PAYLOAD);
    const timer = setTimeout(() => socket.destroy(new Error('timed out connecting to the NBD server')), opts.connectTimeoutMs ?? 15_000);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', (e) => reject(new NbdError('NBD_CONNECT_FAILED', `cannot connect to ${describe(addr)}: ${e.message}`, { cause: e })));
      });
      const n = await negotiateAsClient(socket, reader, addr.exportName);
      return new NbdClient(socket, reader, n);
    } catch (e) {
      socket.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** True when the export has base:allocation metadata (BLOCK_STATUS works). */
  get canBlockStatus(): boolean {
    return this.allocationContextId !== null;
  }

  /** Read `into.length` bytes at `offset` in requests of at most `maxRequest` bytes, `inFlight` at a time. */
  async read(offset: bigint, into: Uint8Array, opts: { maxRequest?: number; inFlight?: number } = {}): Promise<void> {
    if (typeof offset !== 'bigint' || !(into instanceof Uint8Array)) {
      throw new NbdError('NBD_BAD_ARG', 'read(offset, into) expects a bigint offset and a Uint8Array');
    }
    if (offset < 0n || offset + BigInt(into.length) > this.size) {
      throw new NbdError('NBD_OUT_OF_RANGE', `read of ${into.length} bytes at ${offset} is beyond the export size ${this.size}`);
    }
    const min = BigInt(this.blockSize.minimum);
    const a = (offset / min) * min;
    const b = ((offset + BigInt(into.length) + min - 1n) / min) * min;
    if (a !== offset || b !== offset + BigInt(into.length)) {
      // The server asked for aligned requests (NBD_INFO_BLOCK_SIZE): read the aligned span and copy out.
      const wide = new Uint8Array(Number(b - a));
      await this.read(a, wide, opts);
      into.set(wide.subarray(Number(offset - a), Number(offset - a) + into.length));
      return;
    }
    const step = Math.max(this.blockSize.minimum, Math.min(opts.maxRequest ?? 4 * 1024 * 1024, this.blockSize.maximum, P.DEFAULT_MAX_PAYLOAD));
    const pieces: Array<[number, number]> = [];
    for (let at = 0; at < into.length; at += step) pieces.push([at, Math.min(step, into.length - at)]);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < pieces.length) {
        const [at, len] = pieces[next++]!;
        await this.request(P.NBD_CMD_READ, 0, offset + BigInt(at), len, into.subarray(at, at + len));
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.inFlight ?? 8, pieces.length) }, worker));
  }

  /** base:allocation extents from `offset` (at least one; they may stop short of or run past `length`). */
  async blockStatus(offset: bigint, length: number): Promise<BlockStatusExtent[]> {
    if (this.allocationContextId === null) throw new NbdError('NBD_NO_BLOCK_STATUS', 'the server offers no base:allocation metadata');
    const extents: BlockStatusExtent[] = [];
    await this.request(P.NBD_CMD_BLOCK_STATUS, 0, offset, length, null, extents);
    if (extents.length === 0) throw new NbdProtocolError('BLOCK_STATUS reply without extents');
    return extents;
  }

  /** Send NBD_CMD_DISC after the pending requests and close the connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.pending.size > 0 && this.failure === null) await new Promise<void>((r) => this.idleWaiters.push(r));
    this.closed = true;
    if (!this.socket.destroyed) {
      this.socket.write(P.encodeRequestHeader({ flags: 0, type: P.NBD_CMD_DISC, cookie: 0n, offset: 0n, length: 0 }));
      await new Promise<void>((resolve) => {
        this.socket.once('close', () => resolve());
        this.socket.end();
        setTimeout(() => {
          this.socket.destroy();
          resolve();
        }, 2000).unref();
      });
    }
  }

  private settle(cookie: bigint): void {
    this.pending.delete(cookie);
    if (this.pending.size === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  private request(type: number, flags: number, offset: bigint, length: number, into: Uint8Array | null, extents: BlockStatusExtent[] = []): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new NbdDisconnectedError('the NBD client is closed'));
    const cookie = this.nextCookie++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, into, extents, error: null, resolve, reject });
      this.socket.write(P.encodeRequestHeader({ flags, type, cookie, offset, length }));
    });
  }

  private fail(e: Error): void {
    if (this.failure === null) this.failure = e;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.settle(-1n);
    this.socket.destroy();
  }

  private async receiveLoop(): Promise<void> {
    try {
      for (;;) {
        const head = await this.reader.read(4);
        const magic = head.readUInt32BE(0);
        if (magic === P.NBD_SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC && this.structuredReplies) await this.structuredChunk();
        else throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`);
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new NbdError('NBD_PROTOCOL', String(e)));
    }
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (p === undefined) throw new NbdProtocolError(`reply for unknown cookie ${cookie}`);
    return p;
  }

  private async simpleReply(): Promise<void> {
    const rest = await this.reader.read(P.SIMPLE_REPLY_LEN - 4);
    const error = rest.readUInt32BE(0);
    const cookie = rest.readBigUInt64BE(4);
    const p = this.take(cookie);
    if (error === 0 && p.type === P.NBD_CMD_READ && p.into !== null) {
      if (this.structuredReplies) throw new NbdProtocolError('simple reply to READ after structured replies were negotiated');
      p.into.set(await this.reader.read(p.length));
    }
    this.settle(cookie);
    if (error !== 0) p.reject(new NbdServerError(error, `NBD server error ${error} for ${P.commandName(p.type)} at ${p.offset}+${p.length}`));
    else p.resolve();
  }

  private async structuredChunk(): Promise<void> {
    const h = await this.reader.read(P.STRUCTURED_REPLY_HEADER_LEN - 4);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const cookie = h.readBigUInt64BE(4);
    const length = h.readUInt32BE(12);
    if (length > MAX_REPLY_PAYLOAD) throw new NbdProtocolError(`structured reply chunk of ${length} bytes`);
    const p = this.take(cookie);
    const payload = length > 0 ? await this.reader.read(length) : Buffer.alloc(0);
    const reqEnd = p.offset + BigInt(p.length);
    switch (type) {
      case P.NBD_REPLY_TYPE_NONE:
        if (length !== 0) throw new NbdProtocolError('NONE chunk with a payload');
        break;
      case P.NBD_REPLY_TYPE_OFFSET_DATA: {
        if (p.type !== P.NBD_CMD_READ || length < 9) throw new NbdProtocolError('unexpected OFFSET_DATA chunk');
        const off = payload.readBigUInt64BE(0);
        const n = length - 8;
        if (off < p.offset || off + BigInt(n) > reqEnd) throw new NbdProtocolError('OFFSET_DATA outside the request');
        p.into!.set(payload.subarray(8), Number(off - p.offset));
        break;
      }
      case P.NBD_REPLY_TYPE_OFFSET_HOLE: {
        if (p.type !== P.NBD_CMD_READ || length !== 12) throw new NbdProtocolError('unexpected OFFSET_HOLE chunk');
        const off = payload.readBigUInt64BE(0);
        const n = payload.readUInt32BE(8);
        if (n === 0 || off < p.offset || off + BigInt(n) > reqEnd) throw new NbdProtocolError('OFFSET_HOLE outside the request');
        const at = Number(off - p.offset);
        p.into!.fill(0, at, at + n);
        break;
      }
      case P.NBD_REPLY_TYPE_BLOCK_STATUS: {
        if (p.type !== P.NBD_CMD_BLOCK_STATUS || length < 12 || (length - 4) % 8 !== 0) throw new NbdProtocolError('unexpected BLOCK_STATUS chunk');
        if (payload.readUInt32BE(0) === this.allocationContextId) {
          for (let at = 4; at < length; at += 8) {
            const n = payload.readUInt32BE(at);
            if (n === 0) throw new NbdProtocolError('BLOCK_STATUS extent of length 0');
            p.extents.push({ length: n, flags: payload.readUInt32BE(at + 4) });
          }
        }
        break;
      }
      default:
        if ((type & P.NBD_REPLY_TYPE_FLAG_ERROR) !== 0) {
          const errno = length >= 6 ? payload.readUInt32BE(0) : P.NBD_EIO;
          const msgLen = length >= 6 ? Math.min(payload.readUInt16BE(4), length - 6) : 0;
          const msg = payload.toString('utf8', 6, 6 + msgLen);
          p.error ??= new NbdServerError(errno, `NBD server error ${errno} for ${P.commandName(p.type)} at ${p.offset}+${p.length}${msg ? `: ${msg}` : ''}`);
        } else throw new NbdProtocolError(`unknown structured reply type ${type}`);
    }
    if ((flags & P.NBD_REPLY_FLAG_DONE) !== 0) {
      this.settle(cookie);
      if (p.error !== null) p.reject(p.error);
      else p.resolve();
    }
  }
}

interface Negotiated {
  size: bigint;
  flags: number;
  blockSize: { minimum: number; preferred: number; maximum: number };
  structured: boolean;
  allocationContextId: number | null;
}

function describe(a: NbdAddress): string {
  return a.kind === 'unix' ? `unix socket ${a.socketPath}` : `${a.host}:${a.port}`;
}

interface OptionReply {
  type: number;
  payload: Buffer;
}

async function readOptionReply(reader: ByteReader, option: number): Promise<OptionReply> {
  const h = await reader.read(P.OPTION_REPLY_HEADER_LEN);
  if (h.readBigUInt64BE(0) !== P.NBD_REP_MAGIC) throw new NbdProtocolError('bad option reply magic');
  if (h.readUInt32BE(8) !== option) throw new NbdProtocolError(`reply to option ${h.readUInt32BE(8)} while waiting for ${option}`);
  const length = h.readUInt32BE(16);
  if (length > 1024 * 1024) throw new NbdProtocolError(`option reply of ${length} bytes`);
  return { type: h.readUInt32BE(12), payload: length > 0 ? await reader.read(length) : Buffer.alloc(0) };
}

function optionError(what: string, r: OptionReply): NbdError {
  const msg = r.payload.toString('utf8').slice(0, 200);
  if (r.type === P.NBD_REP_ERR_UNKNOWN) return new NbdError('NBD_EXPORT_UNKNOWN', `${what}: the server has no such export${msg ? ` (${msg})` : ''}`);
  return new NbdError('NBD_NEGOTIATION_FAILED', `${what}: server replied 0x${r.type.toString(16)}${msg ? ` (${msg})` : ''}`);
}

function nameAndQueries(name: Buffer, queries: string[]): Buffer {
  const qs = queries.map((q) => Buffer.from(q, 'utf8'));
  const b = Buffer.alloc(4 + name.length + 4 + qs.reduce((n, q) => n + 4 + q.length, 0));
  let at = b.writeUInt32BE(name.length, 0);
  at += name.copy(b, at);
  at = b.writeUInt32BE(qs.length, at);
  for (const q of qs) {
    at = b.writeUInt32BE(q.length, at);
    at += q.copy(b, at);
  }
  return b;
}

async function negotiateAsClient(socket: Socket, reader: ByteReader, exportName: string): Promise<Negotiated> {
  const g = await reader.read(P.HANDSHAKE_SERVER_LEN);
  if (g.readBigUInt64BE(0) !== P.NBD_MAGIC) throw new NbdProtocolError('not an NBD server (bad NBDMAGIC)');
  if (g.readBigUInt64BE(8) !== P.NBD_OPTS_MAGIC) throw new NbdError('NBD_UNSUPPORTED_OLDSTYLE', 'the server speaks oldstyle NBD, which is not supported');
  const serverFlags = g.readUInt16BE(16);
  if ((serverFlags & P.NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new NbdError('NBD_UNSUPPORTED_NEWSTYLE', 'the server does not support fixed newstyle negotiation');
  const noZeroes = (serverFlags & P.NBD_FLAG_NO_ZEROES) !== 0;
  const cf = Buffer.alloc(4);
  cf.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0));
  socket.write(cf);
  const name = Buffer.from(exportName, 'utf8');
  if (name.length > P.MAX_STRING_LEN) throw new NbdError('NBD_BAD_URI', 'export name longer than 4096 bytes');

  socket.write(P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY));
  const sr = await readOptionReply(reader, P.NBD_OPT_STRUCTURED_REPLY);
  const structured = sr.type === P.NBD_REP_ACK;

  let allocationContextId: number | null = null;
  if (structured) {
    socket.write(P.encodeOption(P.NBD_OPT_SET_META_CONTEXT, nameAndQueries(name, [P.BASE_ALLOCATION])));
    for (;;) {
      const r = await readOptionReply(reader, P.NBD_OPT_SET_META_CONTEXT);
      if (r.type === P.NBD_REP_META_CONTEXT && r.payload.length >= 4) {
        if (r.payload.toString('utf8', 4) === P.BASE_ALLOCATION) allocationContextId = r.payload.readUInt32BE(0);
        continue;
      }
      if (r.type !== P.NBD_REP_ACK) allocationContextId = null; // an error: no contexts (proto.md)
      break;
    }
  }

  const go = Buffer.alloc(4 + name.length + 2 + 2);
  go.writeUInt32BE(name.length, 0);
  name.copy(go, 4);
  go.writeUInt16BE(1, 4 + name.length);
  go.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 6 + name.length);
  socket.write(P.encodeOption(P.NBD_OPT_GO, go));
  let size: bigint | null = null;
  let flags = 0;
  let blockSize = { minimum: 1, preferred: 4096, maximum: P.DEFAULT_MAX_PAYLOAD };
  for (;;) {
    const r = await readOptionReply(reader, P.NBD_OPT_GO);
    if (r.type === P.NBD_REP_INFO) {
      const t = r.payload.length >= 2 ? r.payload.readUInt16BE(0) : -1;
      if (t === P.NBD_INFO_EXPORT && r.payload.length === 12) {
        size = r.payload.readBigUInt64BE(2);
        flags = r.payload.readUInt16BE(10);
      } else if (t === P.NBD_INFO_BLOCK_SIZE && r.payload.length === 14) {
        const minimum = r.payload.readUInt32BE(2);
        const preferred = r.payload.readUInt32BE(6);
        const maximum = r.payload.readUInt32BE(10);
        if (minimum < 1 || minimum > 65536 || (minimum & (minimum - 1)) !== 0 || maximum < minimum) {
          throw new NbdProtocolError(`impossible block sizes ${minimum}/${preferred}/${maximum}`);
        }
        blockSize = { minimum, preferred, maximum };
      }
      continue;
    }
    if (r.type === P.NBD_REP_ACK) break;
    if (r.type === P.NBD_REP_ERR_UNSUP) {
      // Old server without OPT_GO: EXPORT_NAME (proto.md says clients SHOULD fall back).
      socket.write(P.encodeOption(P.NBD_OPT_EXPORT_NAME, name));
      const e = await reader.read(10 + (noZeroes ? 0 : P.EXPORT_NAME_PAD_LEN));
      size = e.readBigUInt64BE(0);
      flags = e.readUInt16BE(8);
      break;
    }
    throw optionError(`opening export "${exportName}"`, r);
  }
  if (size === null) throw new NbdProtocolError('OPT_GO succeeded without NBD_INFO_EXPORT');
  return { size, flags, blockSize, structured, allocationContextId };
}
