/**
 * The server's transmission phase (proto.md "Transmission", "Request types"):
 * each request is validated before it reaches the backing, handled
 * concurrently (at most `maxInFlight` per connection), and answered as soon as
 * it completes, so replies may go out of order. A protocol violation the
 * stream cannot recover from (bad magic, a write payload we will not buffer)
 * ends the connection; everything else gets an NBD error value.
 */
import { once } from 'node:events';
import type { Socket } from 'node:net';
import type { NbdBacking, BlockStatusExtent } from './backing.js';
import type { ByteReader } from './byte-reader.js';
import type { NegotiatedSession } from './server-handshake.js';
import { releaseBuffers } from './buffer-pool.js';
import { DirectReplies } from './direct-replies.js';
import { NbdProtocolError, NbdRequestError, nbdErrnoFor } from './errors.js';
import * as P from './protocol.js';

export interface TransmissionLimits {
  /** Requests handled at once on one connection. */
  readonly maxInFlight: number;
  /** Stop reading requests while this many reply bytes wait in the socket. */
  readonly maxQueuedReplyBytes: number;
  /** Close the connection after this long with no request in flight, no reply unsent and no new request (0 = never). */
  readonly idleTimeoutMs?: number;
}

/** TRIM/WRITE_ZEROES larger than this are cut into pieces so no step holds more memory. */
const ZERO_STEP = 32 * 1024 * 1024;
/** On shutdown, how long replies already made may take to reach a client before the connection is dropped. */
const DELIVERY_GRACE_MS = 1000;
/** BLOCK_STATUS answers carry at most this many extents (proto.md suggests at most 2^20). */
const MAX_EXTENTS = 65536;
const U32_MAX = 0xffff_ffff;

const KNOWN_FLAGS =
  P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_DF | P.NBD_CMD_FLAG_REQ_ONE | P.NBD_CMD_FLAG_FAST_ZERO;

/** Flags valid per command besides FUA, which any command may carry (proto.md "Command flags"). */
function allowedFlags(type: number, session: NegotiatedSession): number {
  switch (type) {
    case P.NBD_CMD_READ:
      return session.structuredReplies ? P.NBD_CMD_FLAG_DF : 0;
    case P.NBD_CMD_WRITE_ZEROES:
      return P.NBD_CMD_FLAG_NO_HOLE;
    case P.NBD_CMD_BLOCK_STATUS:
      return P.NBD_CMD_FLAG_REQ_ONE;
    default:
      return 0;
  }
}

/** Fit backing extents to a request: clipped to [offset, offset+length), each length a nonzero u32. */
export function fitExtents(extents: BlockStatusExtent[], length: number, reqOne: boolean): BlockStatusExtent[] {
  const out: BlockStatusExtent[] = [];
  let covered = 0;
  for (const e of extents) {
    if (covered >= length || out.length >= MAX_EXTENTS) break;
    const len = Math.min(e.length, length - covered);
    if (len <= 0) break;
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === e.flags) out[out.length - 1] = { length: last.length + len, flags: e.flags };
    else out.push({ length: len, flags: e.flags });
    covered += len;
    if (reqOne) break;
  }
  return out;
}

export class Transmission {
  private inFlight = 0;
  private slotWaiter: (() => void) | null = null;
  private closed = false;
  private drainArmed = false;
  private readonly settled: Promise<void>[] = [];
  /** The native reply thread, when the backing has a direct read path: then it carries every reply. */
  private replies: DirectReplies | null = null;
  /** Requests in flight whose backing work is done and whose reply waits on the reply thread (on the client reading). */
  private deliveryOnly = 0;
  private workDoneWaiters: Array<() => void> = [];
  /** True while the loop waits for the next request header. */
  private awaitingRequest = false;
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    private readonly backing: NbdBacking,
    private readonly session: NegotiatedSession,
    private readonly limits: TransmissionLimits,
    private readonly isShuttingDown: () => boolean,
    private readonly log?: (line: string) => void,
  ) {
    socket.on('close', () => {
      this.closed = true;
      this.disarmIdle();
      this.replies?.close();
      this.wakeSlot();
    });
  }

  /** Serve requests until DISC, a protocol violation or the peer going away; then wait for in-flight work. */
  async run(): Promise<void> {
    try {
      await this.startDirectReplies();
      for (;;) {
        await this.waitForSlot();
        if (this.closed) return;
        this.awaitingRequest = true;
        this.armIdle();
        let raw: Buffer;
        try {
          raw = await this.reader.read(P.REQUEST_HEADER_LEN);
        } finally {
          this.awaitingRequest = false;
          this.disarmIdle();
        }
        const h = P.decodeRequestHeader(raw);
        if (h.magic !== P.NBD_REQUEST_MAGIC) throw new NbdProtocolError(`bad request magic 0x${h.magic.toString(16)}`);
        let payload: Buffer | null = null;
        if (h.type === P.NBD_CMD_WRITE) {
          if (h.length > this.backing.blockSize.maximum) {
            // We will not buffer it and cannot resynchronise the stream without it: error, then hard disconnect.
            await this.sendError(h, P.NBD_EOVERFLOW, `WRITE of ${h.length} bytes exceeds the maximum payload ${this.backing.blockSize.maximum}`);
            throw new NbdProtocolError(`WRITE payload of ${h.length} bytes is over the limit`);
          }
          payload = await this.reader.read(h.length);
        }
        if (h.type === P.NBD_CMD_DISC) return;
        this.dispatch(h, payload);
      }
    } finally {
      this.disarmIdle();
      await Promise.allSettled(this.settled);
      this.replies?.close();
    }
  }

  /**
   * Idle: waiting for a request with none in flight and every reply taken by the socket. Entered only when the loop
   * starts waiting, the last request settles or the socket flushes its replies (each calls armIdle); left only when a
   * request header arrives (which disarms), so the timer needs no re-check of activity in between.
   */
  private isIdle(): boolean {
    return this.awaitingRequest && this.inFlight === 0 && this.socket.writableLength === 0 && !this.closed;
  }

  private armIdle(): void {
    const ms = this.limits.idleTimeoutMs ?? 0;
    if (ms <= 0 || this.idleTimer !== null || !this.isIdle()) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (!this.isIdle()) return;
      this.log?.(`nbd: closing a connection idle for ${ms / 1000} s`);
      this.socket.destroy();
    }, ms);
  }

  private disarmIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Hand replies to a native thread once the handshake's replies have left the socket's queue. */
  private async startDirectReplies(): Promise<void> {
    const direct = this.backing.direct;
    if (direct === undefined || this.closed) return;
    if (this.socket.writableLength > 0) await Promise.race([once(this.socket, 'drain'), once(this.socket, 'close')]);
    if (this.closed || this.socket.destroyed) return;
    this.replies = DirectReplies.start(direct.file, this.socket, () => this.socket.destroy());
  }

  /**
   * Wait for the requests in flight now to be answered. With a reply thread, a reply can wait on a
   * client that does not read: then wait for the backing work (writes reach the image), and give
   * delivery a grace period only.
   */
  async drain(): Promise<void> {
    const all = Promise.allSettled([...this.settled]);
    if (this.replies === null) {
      await all;
      return;
    }
    if (this.inFlight > this.deliveryOnly) await new Promise<void>((resolve) => this.workDoneWaiters.push(resolve));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise((resolve) => (timer = setTimeout(resolve, DELIVERY_GRACE_MS)))]);
    clearTimeout(timer);
  }

  /** Track a reply handed to the reply thread: its request's backing work is done. */
  private async delivered(sent: Promise<void>): Promise<void> {
    this.deliveryOnly++;
    this.checkWorkDone();
    try {
      await sent;
    } finally {
      this.deliveryOnly--;
    }
  }

  private checkWorkDone(): void {
    if (this.inFlight <= this.deliveryOnly) for (const w of this.workDoneWaiters.splice(0)) w();
  }

  private dispatch(h: P.RequestHeader, payload: Buffer | null): void {
    this.inFlight++;
    const p = this.handle(h, payload)
      .catch((e: unknown) => this.sendError(h, nbdErrnoFor(e), (e as Error)?.message ?? 'request failed'))
      .finally(() => {
        this.inFlight--;
        this.checkWorkDone();
        this.armIdle();
        const i = this.settled.indexOf(p);
        if (i >= 0) this.settled.splice(i, 1);
        this.wakeSlot();
      });
    this.settled.push(p);
  }

  private async waitForSlot(): Promise<void> {
    while (!this.closed && (this.inFlight >= this.limits.maxInFlight || this.socket.writableLength > this.limits.maxQueuedReplyBytes)) {
      if (this.socket.writableLength > this.limits.maxQueuedReplyBytes && !this.drainArmed) {
        this.drainArmed = true;
        this.socket.once('drain', () => {
          this.drainArmed = false;
          this.wakeSlot();
        });
      }
      await new Promise<void>((resolve) => {
        this.slotWaiter = resolve;
      });
    }
  }

  private wakeSlot(): void {
    const w = this.slotWaiter;
    this.slotWaiter = null;
    w?.();
  }

  /** Checks common to every command; throws NbdRequestError with the value proto.md asks for. */
  private validate(h: P.RequestHeader): void {
    const b = this.backing;
    const t = h.type;
    if (t > P.NBD_CMD_BLOCK_STATUS || t === P.NBD_CMD_CACHE) throw new NbdRequestError(P.NBD_EINVAL, `unsupported ${P.commandName(t)}`);
    if ((h.flags & ~KNOWN_FLAGS) !== 0 || (h.flags & ~(allowedFlags(t, this.session) | P.NBD_CMD_FLAG_FUA)) !== 0) {
      throw new NbdRequestError(P.NBD_EINVAL, `flags 0x${h.flags.toString(16)} are not valid for ${P.commandName(t)}`);
    }
    if (this.isShuttingDown()) throw new NbdRequestError(P.NBD_ESHUTDOWN, 'the server is shutting down');
    const writes = t === P.NBD_CMD_WRITE || t === P.NBD_CMD_TRIM || t === P.NBD_CMD_WRITE_ZEROES;
    if (writes && b.readOnly) throw new NbdRequestError(P.NBD_EPERM, 'the export is read-only');
    if ((t === P.NBD_CMD_TRIM && !b.canTrim) || (t === P.NBD_CMD_WRITE_ZEROES && !b.canZero)) {
      throw new NbdRequestError(P.NBD_EINVAL, `${P.commandName(t)} is not supported by this export`);
    }
    if (t === P.NBD_CMD_FLUSH) {
      if (h.offset !== 0n || h.length !== 0) throw new NbdRequestError(P.NBD_EINVAL, 'FLUSH needs offset and length zero');
      return;
    }
    if (t === P.NBD_CMD_BLOCK_STATUS && this.session.allocationContextId === null) {
      throw new NbdRequestError(P.NBD_EINVAL, 'BLOCK_STATUS without a negotiated metadata context');
    }
    const end = h.offset + BigInt(h.length);
    if (end > b.size) {
      const errno = t === P.NBD_CMD_WRITE || t === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
      throw new NbdRequestError(errno, `${P.commandName(t)} at ${h.offset}+${h.length} is beyond the export size ${b.size}`);
    }
    const min = BigInt(b.blockSize.minimum);
    if (min > 1n && (h.offset % min !== 0n || BigInt(h.length) % min !== 0n)) {
      throw new NbdRequestError(P.NBD_EINVAL, `${P.commandName(t)} is not aligned to ${min} bytes`);
    }
    if (t === P.NBD_CMD_READ && h.length > b.blockSize.maximum) {
      throw new NbdRequestError(P.NBD_EOVERFLOW, `READ of ${h.length} bytes exceeds the maximum payload ${b.blockSize.maximum}`);
    }
  }

  private async handle(h: P.RequestHeader, payload: Buffer | null): Promise<void> {
    this.validate(h);
    const b = this.backing;
    const fua = (h.flags & P.NBD_CMD_FLAG_FUA) !== 0 && !b.readOnly && b.canFlush;
    switch (h.type) {
      case P.NBD_CMD_READ:
        return this.read(h);
      case P.NBD_CMD_WRITE:
        if (h.length > 0) await b.write(h.offset, payload!, fua);
        return this.sendOk(h);
      case P.NBD_CMD_FLUSH:
        if (!b.readOnly && b.canFlush) await b.flush();
        return this.sendOk(h);
      case P.NBD_CMD_TRIM:
        await this.inSteps(h, (off, len) => b.trim(off, len));
        if (fua) await b.flush();
        return this.sendOk(h);
      case P.NBD_CMD_WRITE_ZEROES: {
        const mayTrim = (h.flags & P.NBD_CMD_FLAG_NO_HOLE) === 0;
        await this.inSteps(h, (off, len) => b.zero(off, len, mayTrim));
        if (fua) await b.flush();
        return this.sendOk(h);
      }
      case P.NBD_CMD_BLOCK_STATUS:
        return this.blockStatus(h);
      default:
        throw new NbdRequestError(P.NBD_EINVAL, `unsupported ${P.commandName(h.type)}`);
    }
  }

  private async inSteps(h: P.RequestHeader, op: (offset: bigint, length: number) => Promise<void>): Promise<void> {
    for (let done = 0; done < h.length; ) {
      const step = Math.min(ZERO_STEP, h.length - done);
      await op(h.offset + BigInt(done), step);
      done += step;
    }
  }

  private async read(h: P.RequestHeader): Promise<void> {
    const b = this.backing;
    const plan = this.replies !== null && h.length > 0 ? b.direct!.plan(h.offset, h.length) : null;
    if (plan !== null) {
      // One data chunk (or simple reply) made by the reply thread; its error reply is ready in case the file read fails.
      const structured = this.session.structuredReplies;
      const head = structured ? P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, h.cookie, h.offset, h.length) : P.encodeSimpleReply(0, h.cookie);
      const onReadError = structured
        ? P.encodeErrorChunk(P.NBD_REPLY_FLAG_DONE, h.cookie, P.NBD_EIO, 'reading the image failed')
        : P.encodeSimpleReply(P.NBD_EIO, h.cookie);
      return this.delivered(this.replies!.read(head, onReadError, plan, h.length));
    }
    if (!this.session.structuredReplies) {
      const data = h.length > 0 ? await b.read(h.offset, h.length) : new Uint8Array(0);
      return this.write([P.encodeSimpleReply(0, h.cookie), data], [data]);
    }
    if (h.length === 0) {
      return this.write([P.encodeChunkHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, h.cookie, 0)]);
    }
    const df = (h.flags & P.NBD_CMD_FLAG_DF) !== 0;
    if (df || b.readSparse === undefined) {
      const data = await b.read(h.offset, h.length);
      return this.write([P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, h.cookie, h.offset, data.length), data], [data]);
    }
    const segments = await b.readSparse(h.offset, h.length);
    const parts: Uint8Array[] = [];
    let at = h.offset;
    segments.forEach((s, i) => {
      const flags = i === segments.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (s.data === null) parts.push(P.encodeOffsetHole(flags, h.cookie, at, s.length));
      else parts.push(P.encodeOffsetDataHeader(flags, h.cookie, at, s.length), s.data);
      at += BigInt(s.length);
    });
    if (at !== h.offset + BigInt(h.length)) throw new NbdRequestError(P.NBD_EIO, 'backing returned a short sparse read');
    return this.write(parts, segments.flatMap((s) => (s.data === null ? [] : [s.data])));
  }

  private async blockStatus(h: P.RequestHeader): Promise<void> {
    const reqOne = (h.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
    let length = h.length;
    if (length === 0) {
      // Unspecified by proto.md; answer about one byte's worth rather than an empty (invalid) chunk.
      if (h.offset >= this.backing.size) throw new NbdRequestError(P.NBD_EINVAL, 'BLOCK_STATUS at the end of the export');
      length = 1;
    }
    const extents = fitExtents(await this.backing.blockStatus(h.offset, length), length, reqOne);
    if (extents.length === 0 || extents.some((e) => e.length <= 0 || e.length > U32_MAX)) {
      throw new NbdRequestError(P.NBD_EIO, 'backing returned no usable extents');
    }
    return this.write([P.encodeBlockStatusChunk(P.NBD_REPLY_FLAG_DONE, h.cookie, this.session.allocationContextId!, extents)]);
  }

  private sendOk(h: P.RequestHeader): Promise<void> {
    if (this.session.structuredReplies) return this.write([P.encodeChunkHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, h.cookie, 0)]);
    return this.write([P.encodeSimpleReply(0, h.cookie)]);
  }

  private sendError(h: P.RequestHeader, errno: number, message: string): Promise<void> {
    // With structured replies a READ must never get a simple reply (proto.md "Structured reply chunk message").
    if (this.session.structuredReplies) return this.write([P.encodeErrorChunk(P.NBD_REPLY_FLAG_DONE, h.cookie, errno, message)]);
    return this.write([P.encodeSimpleReply(errno, h.cookie)]);
  }

  /**
   * One reply's pieces go out together: through the reply thread when there is one (it copies them),
   * else as corked socket writes, never interleaved with another reply's. Never rejects.
   */
  private async write(parts: Uint8Array[], pooled: Uint8Array[] = []): Promise<void> {
    if (this.replies !== null) {
      const sent = this.replies.send(parts);
      releaseBuffers(pooled);
      return this.delivered(sent);
    }
    if (this.closed || this.socket.destroyed) return;
    this.socket.cork();
    parts.forEach((p, i) => {
      // Pooled data buffers go back once the socket has taken the last piece; then the connection may be idle.
      if (i === parts.length - 1)
        this.socket.write(p, () => {
          releaseBuffers(pooled);
          this.armIdle();
        });
      else this.socket.write(p);
    });
    this.socket.uncork();
  }
}
