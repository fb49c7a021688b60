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
import { ReplyBudget } from './reply-budget.js';
import { NbdProtocolError, NbdRequestError, nbdErrnoFor } from './errors.js';
import * as P from './protocol.js';

export interface TransmissionLimits {
  /** Requests handled at once on one connection. */
  readonly maxInFlight: number;
  /**
   * Reply bytes one connection may hold in memory (read, not yet taken by the kernel or the reply thread); requests
   * also stop being read while this many wait in the socket.
   */
  readonly maxQueuedReplyBytes: number;
  /** The budget every connection of the server draws from as well. */
  readonly serverBudget?: ReplyBudget;
  /** WRITE payload bytes one connection may have received and not yet written; no more is read until they are. */
  readonly maxQueuedWriteBytes?: number;
  /** The same, for all connections of the server together. */
  readonly serverWriteBudget?: ReplyBudget;
  /** Close the connection after this long with no request in flight, no reply unsent and no new request (0 = never). */
  readonly idleTimeoutMs?: number;
}

/**
 * READ replies larger than this are read and sent in pieces of this size, one such reply at a time per connection,
 * the next piece read only once the previous one has left: a 32 MiB READ holds two pieces, not 32 MiB, however slowly
 * its client reads.
 */
export const STREAM_PIECE = 1024 * 1024;
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
  /** Reply bytes this connection holds (see TransmissionLimits.maxQueuedReplyBytes). */
  private readonly budget: ReplyBudget;
  /** WRITE payload bytes received and not yet written (see TransmissionLimits.maxQueuedWriteBytes). */
  private readonly writeBudget: ReplyBudget;
  /** Set while a streamed reply owns the output: other replies wait for it (they must not interleave with it). */
  private outputBusy: Promise<void> | null = null;
  /** Waiters for socket writes to complete, settled at the latest when the socket closes. */
  private readonly flushWaiters = new Set<() => void>();

  constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    private readonly backing: NbdBacking,
    private readonly session: NegotiatedSession,
    private readonly limits: TransmissionLimits,
    private readonly isShuttingDown: () => boolean,
    private readonly log?: (line: string) => void,
  ) {
    this.budget = new ReplyBudget(limits.maxQueuedReplyBytes);
    this.writeBudget = new ReplyBudget(limits.maxQueuedWriteBytes ?? 64 * 1024 * 1024);
    socket.on('close', () => {
      this.closed = true;
      this.disarmIdle();
      for (const w of [...this.flushWaiters]) w();
      this.replies?.close();
      this.wakeSlot();
    });
  }

  /** Serve requests until DISC, a protocol violation or the peer going away; then wait for in-flight work. */
  async run(): Promise<void> {
    let payloadRelease: (() => void) | null = null;
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
          // Room for the payload first: while earlier writes are pending, the client's next one waits in its socket.
          payloadRelease = await this.reservePayload(h.length);
          payload = await this.reader.read(h.length);
        }
        if (h.type === P.NBD_CMD_DISC) return;
        this.dispatch(h, payload, payloadRelease);
        payloadRelease = null;
      }
    } finally {
      payloadRelease?.();
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

  /**
   * Hand replies to a native thread once the handshake's replies have left the socket's queue. Never over
   * TLS: the thread sends plaintext straight to the descriptor (see DirectReplies.start).
   */
  private async startDirectReplies(): Promise<void> {
    const direct = this.backing.direct;
    if (direct === undefined || this.closed || this.session.tls) return;
    // 'drain' fires only after a write that returned false; an empty write's callback runs once everything queued
    // before it has been handed to the kernel, whichever way the queue filled.
    if (this.socket.writableLength > 0) {
      await Promise.race([new Promise<void>((resolve) => this.socket.write(Buffer.alloc(0), () => resolve())), once(this.socket, 'close')]);
    }
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

  private dispatch(h: P.RequestHeader, payload: Buffer | null, payloadRelease: (() => void) | null): void {
    this.inFlight++;
    const p = this.handle(h, payload)
      .finally(() => payloadRelease?.()) // the backing is done with the payload
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
      for (let busy = this.outputFree(); busy !== null; busy = this.outputFree()) await busy;
      return this.delivered(this.replies!.read(head, onReadError, plan, h.length));
    }
    if (h.length > STREAM_PIECE) return this.streamRead(h);
    // A small reply: held whole, within the connection's and the server's budgets (waiting here holds nothing).
    const release = await this.reserve(h.length);
    if (this.closed) {
      release(); // the client left while this waited: nobody to read it
      return;
    }
    try {
      if (!this.session.structuredReplies) {
        const data = h.length > 0 ? await b.read(h.offset, h.length) : new Uint8Array(0);
        return await this.write([P.encodeSimpleReply(0, h.cookie), data], [data], release);
      }
      if (h.length === 0) {
        return await this.write([P.encodeChunkHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, h.cookie, 0)], [], release);
      }
      const df = (h.flags & P.NBD_CMD_FLAG_DF) !== 0;
      if (df || b.readSparse === undefined) {
        const data = await b.read(h.offset, h.length);
        return await this.write([P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, h.cookie, h.offset, data.length), data], [data], release);
      }
      const { parts, pooled } = await this.sparseChunks(h, h.offset, h.length, true);
      return await this.write(parts, pooled, release);
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Structured chunks (OFFSET_DATA / OFFSET_HOLE) for [offset, offset+length) of READ `h`; the last one DONE if `last`. */
  private async sparseChunks(h: P.RequestHeader, offset: bigint, length: number, last: boolean): Promise<{ parts: Uint8Array[]; pooled: Uint8Array[] }> {
    const segments = await this.backing.readSparse!(offset, length);
    const pooled = segments.flatMap((s) => (s.data === null ? [] : [s.data]));
    const parts: Uint8Array[] = [];
    let at = offset;
    segments.forEach((s, i) => {
      const flags = last && i === segments.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (s.data === null) parts.push(P.encodeOffsetHole(flags, h.cookie, at, s.length));
      else parts.push(P.encodeOffsetDataHeader(flags, h.cookie, at, s.length), s.data);
      at += BigInt(s.length);
    });
    if (at !== offset + BigInt(length)) {
      releaseBuffers(pooled);
      throw new NbdRequestError(P.NBD_EIO, 'backing returned a short sparse read');
    }
    return { parts, pooled };
  }

  /**
   * A READ larger than STREAM_PIECE, read and sent piece by piece while it owns the connection's output. Its pieces
   * stay out of the budgets: replies queued behind this one may hold budget, and waiting for them would deadlock;
   * counting them would let clients that never read use up the server budget (every connection may hold two pieces)
   * and starve the others. It holds two pieces at most: the one leaving and the one being read. A simple reply or a DF read is
   * one contiguous payload, so a failure after its first piece left ends the connection (proto.md "Simple reply
   * message": the data cannot be taken back); structured pieces are chunks of their own, and an error chunk may
   * follow them.
   */
  private async streamRead(h: P.RequestHeader): Promise<void> {
    const b = this.backing;
    const structured = this.session.structuredReplies;
    const contiguous = !structured || (h.flags & P.NBD_CMD_FLAG_DF) !== 0 || b.readSparse === undefined;
    const unlock = await this.lockOutput();
    let previous: Promise<void> = Promise.resolve();
    let started = false;
    try {
      for (let done = 0; done < h.length; ) {
        if (this.closed) return; // nobody to read it: do not read the image for it
        const n = Math.min(STREAM_PIECE, h.length - done);
        const at = h.offset + BigInt(done);
        const last = done + n === h.length;
        let piece: { parts: Uint8Array[]; pooled: Uint8Array[] } | undefined;
        try {
          if (contiguous) {
            const data = await b.read(at, n);
            const parts = [data];
            if (done === 0) {
              parts.unshift(structured ? P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, h.cookie, h.offset, h.length) : P.encodeSimpleReply(0, h.cookie));
            }
            piece = { parts, pooled: [data] };
          } else {
            piece = await this.sparseChunks(h, at, n, last);
          }
          // The previous piece must have left before this one is queued: at most two pieces are held.
          await this.delivered(previous);
        } catch (e) {
          releaseBuffers(piece?.pooled ?? []);
          throw e;
        }
        if (this.closed) {
          releaseBuffers(piece.pooled);
          return;
        }
        previous = this.writeNow(piece.parts, piece.pooled);
        started = true;
        done += n;
      }
      if (this.replies !== null) await this.delivered(previous);
    } catch (e) {
      if (started && contiguous) this.socket.destroy();
      throw e;
    } finally {
      unlock();
    }
  }

  /** Wait for room for an n-byte reply in the connection's budget, then the server's; returns the release (idempotent). */
  private async reserve(n: number): Promise<() => void> {
    if (n === 0) return () => undefined;
    const server = this.limits.serverBudget;
    // Waiting for budget is waiting for clients to read: like delivery, it must not hold up shutdown's drain().
    await this.delivered(this.budget.acquire(n));
    if (server !== undefined) {
      try {
        await this.delivered(server.acquire(n));
      } catch (e) {
        this.budget.release(n);
        throw e;
      }
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.budget.release(n);
      server?.release(n);
    };
  }

  /** Wait for room for an n-byte WRITE payload in the connection's and the server's write budgets; returns the release. */
  private async reservePayload(n: number): Promise<() => void> {
    if (n === 0) return () => undefined;
    const server = this.limits.serverWriteBudget;
    await this.writeBudget.acquire(n);
    if (server !== undefined) await server.acquire(n);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.writeBudget.release(n);
      server?.release(n);
    };
  }

  /** Take the connection's output for a streamed reply; resolves with the release. */
  private async lockOutput(): Promise<() => void> {
    // The check and the take must not be split by an await (another waiter would take it too).
    while (this.outputBusy !== null) await this.outputBusy;
    let release!: () => void;
    this.outputBusy = new Promise<void>((r) => (release = r));
    return () => {
      this.outputBusy = null;
      release();
    };
  }

  /**
   * Wait until no streamed reply owns the output. The caller must write in the same synchronous step as its own
   * check of outputBusy: returning from an async function is another turn, in which a stream may take the output.
   */
  private outputFree(): Promise<void> | null {
    return this.outputBusy;
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
   * One reply's pieces go out together, after any streamed reply: through the reply thread when there is one (it
   * copies them; the request then waits for delivery), else as corked socket writes (the request is done; the
   * socket's queue is bounded by the budgets and waitForSlot). `onSent` runs once they have left. Never rejects.
   */
  private async write(parts: Uint8Array[], pooled: Uint8Array[] = [], onSent?: () => void): Promise<void> {
    for (let busy = this.outputFree(); busy !== null; busy = this.outputFree()) await busy;
    const left = this.writeNow(parts, pooled, onSent);
    if (this.replies !== null) return this.delivered(left);
  }

  /** Queue a reply's pieces now; resolves once they have left (the reply thread sent them, the socket flushed them, or it closed). */
  private writeNow(parts: Uint8Array[], pooled: Uint8Array[], onSent?: () => void): Promise<void> {
    if (this.replies !== null) {
      const sent = this.replies.send(parts);
      releaseBuffers(pooled);
      return sent.finally(() => onSent?.());
    }
    if (this.closed || this.socket.destroyed) {
      releaseBuffers(pooled);
      onSent?.();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (!this.flushWaiters.delete(done)) return;
        // Pooled data buffers go back once the socket has taken the last piece; then the connection may be idle.
        releaseBuffers(pooled);
        onSent?.();
        resolve();
        this.armIdle();
      };
      this.flushWaiters.add(done);
      this.socket.cork();
      parts.forEach((p, i) => {
        if (i === parts.length - 1) this.socket.write(p, done);
        else this.socket.write(p);
      });
      this.socket.uncork();
    });
  }
}
