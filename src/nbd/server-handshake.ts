/**
 * The server side of fixed newstyle negotiation (proto.md "Fixed newstyle
 * negotiation", "Option types"): options GO, INFO, EXPORT_NAME, LIST, ABORT,
 * STRUCTURED_REPLY, LIST_META_CONTEXT, SET_META_CONTEXT and, with TLS
 * credentials, STARTTLS (proto.md "TLS support": FORCEDTLS for --tls require,
 * SELECTIVETLS with every export available both ways for --tls on); anything
 * else gets NBD_REP_ERR_UNSUP. Resolves with what transmission needs and the
 * socket to carry it (the TLS socket after STARTTLS), or a null session when
 * the client aborted.
 */
import type { Socket } from 'node:net';
import { ByteReader } from './byte-reader.js';
import type { NbdBacking } from './backing.js';
import { NbdProtocolError } from './errors.js';
import * as P from './protocol.js';
import type { NbdTlsCredentials } from './tls.js';

/** The export the server offers under one name (an empty name also selects it). */
export interface ExportDescriptor {
  readonly name: string;
  readonly backing: NbdBacking;
}

/** The outcome of a successful negotiation. */
export interface NegotiatedSession {
  readonly structuredReplies: boolean;
  /** The metadata context id chosen for base:allocation, or null if none was selected. */
  readonly allocationContextId: number | null;
  readonly transmissionFlags: number;
  /** True when negotiation ended over TLS. */
  readonly tls: boolean;
}

/** TLS as the server offers it: 'require' is FORCEDTLS, 'on' lets each client choose. */
export interface HandshakeTls {
  readonly mode: 'require' | 'on';
  readonly credentials: NbdTlsCredentials;
  /** The reader's buffering limit, for the reader made over the TLS socket. */
  readonly highWater: number;
  /** Called with the TLS socket once its handshake is done: from then on it is the connection. */
  readonly onUpgrade: (tlsSocket: Socket) => void;
}

/** What negotiation leaves: the session (null after ABORT) and the socket and reader that now carry the connection. */
export interface NegotiationResult {
  readonly session: NegotiatedSession | null;
  readonly socket: Socket;
  readonly reader: ByteReader;
}

/** Options larger than this are a denial of service: hard disconnect (proto.md "Termination of the session"). */
const MAX_OPTION_LENGTH = 64 * 1024;
/** A client that keeps haggling forever is disconnected. */
const MAX_OPTIONS = 4096;
const BASE_ALLOCATION_ID = 1;

/** The transmission flags that tell the truth about a backing. */
export function transmissionFlagsFor(backing: NbdBacking, structuredReplies: boolean): number {
  let flags = P.NBD_FLAG_HAS_FLAGS;
  if (backing.readOnly) flags |= P.NBD_FLAG_READ_ONLY;
  else {
    if (backing.canFlush) flags |= P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA;
    if (backing.canTrim) flags |= P.NBD_FLAG_SEND_TRIM;
    if (backing.canZero) flags |= P.NBD_FLAG_SEND_WRITE_ZEROES;
  }
  if (structuredReplies) flags |= P.NBD_FLAG_SEND_DF;
  if (backing.canMultiConn) flags |= P.NBD_FLAG_CAN_MULTI_CONN;
  return flags;
}

class OptionPayload {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  get remaining(): number {
    return this.b.length - this.at;
  }
  u16(): number | null {
    if (this.remaining < 2) return null;
    const v = this.b.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }
  u32(): number | null {
    if (this.remaining < 4) return null;
    const v = this.b.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }
  string(len: number): string | null {
    if (len > this.remaining || len > P.MAX_STRING_LEN) return null;
    const s = this.b.toString('utf8', this.at, this.at + len);
    this.at += len;
    return s;
  }
}

function stringPayload(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

/** Runs negotiation on one connection. */
export async function negotiate(
  plainSocket: Socket,
  plainReader: ByteReader,
  exp: ExportDescriptor,
  tls: HandshakeTls | null = null,
): Promise<NegotiationResult> {
  let socket = plainSocket;
  let reader = plainReader;
  let secure = false;
  const greeting = Buffer.allocUnsafe(P.HANDSHAKE_SERVER_LEN);
  greeting.writeBigUInt64BE(P.NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 8);
  greeting.writeUInt16BE(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 16);
  socket.write(greeting);

  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  // proto.md "Client flags": the server MUST drop the connection on unknown client flags.
  if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new NbdProtocolError(`client sent unknown handshake flags 0x${clientFlags.toString(16)}`);
  }
  const noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;

  let structuredReplies = false;
  let allocationContextId: number | null = null;
  const reply = (option: number, type: number, payload?: Uint8Array): void => {
    socket.write(P.encodeOptionReply(option, type, payload));
  };
  const replyError = (option: number, type: number, message: string): void => reply(option, type, stringPayload(message));
  const knownName = (name: string): boolean => name === '' || name === exp.name;
  const done = (session: NegotiatedSession | null): NegotiationResult => ({ session, socket, reader });

  for (let count = 0; count < MAX_OPTIONS; count++) {
    const header = await reader.read(P.OPTION_HEADER_LEN);
    if (header.readBigUInt64BE(0) !== P.NBD_OPTS_MAGIC) throw new NbdProtocolError('bad option magic');
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > MAX_OPTION_LENGTH) throw new NbdProtocolError(`option ${option} has length ${length}, more than ${MAX_OPTION_LENGTH}`);
    const data = new OptionPayload(length > 0 ? await reader.read(length) : Buffer.alloc(0));

    if (tls !== null && !secure && tls.mode === 'require') {
      // FORCEDTLS (proto.md "TLS support"): EXPORT_NAME cannot be answered with an error, so the session ends;
      // every other option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD.
      if (option === P.NBD_OPT_EXPORT_NAME) throw new NbdProtocolError('EXPORT_NAME before TLS, which this server requires');
      if (option !== P.NBD_OPT_STARTTLS && option !== P.NBD_OPT_ABORT) {
        replyError(option, P.NBD_REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
        continue;
      }
    }

    switch (option) {
      case P.NBD_OPT_STARTTLS: {
        if (tls === null) {
          replyError(option, P.NBD_REP_ERR_UNSUP, 'this server does not offer TLS');
          break;
        }
        if (secure) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'TLS is already in use');
          break;
        }
        if (length !== 0) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'STARTTLS takes no data');
          break;
        }
        // Bytes that arrived ahead of the ACK would be read as if they had come through TLS (the STARTTLS
        // injection of RFC 3207-era servers): detach() refuses them and the connection is dropped.
        plainReader.detach();
        reply(option, P.NBD_REP_ACK);
        // Wrapped in the same tick as the ACK is queued: the client's ClientHello cannot arrive in between.
        const tlsSocket = await tls.credentials.upgrade(plainSocket);
        tls.onUpgrade(tlsSocket);
        socket = tlsSocket;
        reader = new ByteReader(tlsSocket, tls.highWater);
        secure = true;
        // What was haggled in plaintext may have been altered on the way; start over under TLS.
        structuredReplies = false;
        allocationContextId = null;
        break;
      }
      case P.NBD_OPT_EXPORT_NAME: {
        const name = data.string(length);
        // proto.md: an EXPORT_NAME the server cannot satisfy ends the session (no error reply exists).
        if (name === null || !knownName(name)) throw new NbdProtocolError('EXPORT_NAME for an unknown export');
        const flags = transmissionFlagsFor(exp.backing, structuredReplies);
        const out = Buffer.alloc(10 + (noZeroes ? 0 : P.EXPORT_NAME_PAD_LEN));
        out.writeBigUInt64BE(exp.backing.size, 0);
        out.writeUInt16BE(flags, 8);
        socket.write(out);
        return done({ structuredReplies, allocationContextId: structuredReplies ? allocationContextId : null, transmissionFlags: flags, tls: secure });
      }
      case P.NBD_OPT_ABORT:
        reply(option, P.NBD_REP_ACK);
        return done(null);
      case P.NBD_OPT_LIST: {
        if (length !== 0) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'LIST takes no data');
          break;
        }
        const name = stringPayload(exp.name);
        const payload = Buffer.allocUnsafe(4 + name.length);
        payload.writeUInt32BE(name.length, 0);
        name.copy(payload, 4);
        reply(option, P.NBD_REP_SERVER, payload);
        reply(option, P.NBD_REP_ACK);
        break;
      }
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) replyError(option, P.NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
        else if (structuredReplies) replyError(option, P.NBD_REP_ERR_INVALID, 'structured replies already negotiated');
        else {
          structuredReplies = true;
          reply(option, P.NBD_REP_ACK);
        }
        break;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        const nameLen = data.u32();
        const name = nameLen === null ? null : data.string(nameLen);
        const nInfo = data.u16();
        if (name === null || nInfo === null || data.remaining !== nInfo * 2) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'malformed INFO/GO request');
          break;
        }
        if (!knownName(name)) {
          replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name.slice(0, 64)}"`);
          break;
        }
        const requested = new Set<number>();
        for (let i = 0; i < nInfo; i++) requested.add(data.u16()!);
        const flags = transmissionFlagsFor(exp.backing, structuredReplies);
        const info = Buffer.allocUnsafe(12);
        info.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
        info.writeBigUInt64BE(exp.backing.size, 2);
        info.writeUInt16BE(flags, 10);
        reply(option, P.NBD_REP_INFO, info);
        // Sent unasked too: the server MAY volunteer information (proto.md NBD_OPT_INFO).
        const bs = Buffer.allocUnsafe(14);
        bs.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 0);
        bs.writeUInt32BE(exp.backing.blockSize.minimum, 2);
        bs.writeUInt32BE(exp.backing.blockSize.preferred, 6);
        bs.writeUInt32BE(exp.backing.blockSize.maximum, 10);
        reply(option, P.NBD_REP_INFO, bs);
        if (requested.has(P.NBD_INFO_NAME)) {
          const n = stringPayload(exp.name);
          const b = Buffer.allocUnsafe(2 + n.length);
          b.writeUInt16BE(P.NBD_INFO_NAME, 0);
          n.copy(b, 2);
          reply(option, P.NBD_REP_INFO, b);
        }
        if (requested.has(P.NBD_INFO_DESCRIPTION) && exp.backing.description !== undefined) {
          const d = stringPayload(exp.backing.description.slice(0, 256));
          const b = Buffer.allocUnsafe(2 + d.length);
          b.writeUInt16BE(P.NBD_INFO_DESCRIPTION, 0);
          d.copy(b, 2);
          reply(option, P.NBD_REP_INFO, b);
        }
        reply(option, P.NBD_REP_ACK);
        if (option === P.NBD_OPT_GO) {
          return done({ structuredReplies, allocationContextId: structuredReplies ? allocationContextId : null, transmissionFlags: flags, tls: secure });
        }
        break;
      }
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT: {
        const isSet = option === P.NBD_OPT_SET_META_CONTEXT;
        // SET replaces the previous selection even when it fails (proto.md NBD_OPT_SET_META_CONTEXT).
        if (isSet) allocationContextId = null;
        if (!structuredReplies) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'negotiate structured replies first');
          break;
        }
        const nameLen = data.u32();
        const name = nameLen === null ? null : data.string(nameLen);
        const nQueries = data.u32();
        const queries: string[] = [];
        let ok = name !== null && nQueries !== null && nQueries <= 1024;
        for (let i = 0; ok && i < nQueries!; i++) {
          const qLen = data.u32();
          const q = qLen === null ? null : data.string(qLen);
          if (q === null) ok = false;
          else queries.push(q);
        }
        if (!ok || data.remaining !== 0) {
          replyError(option, P.NBD_REP_ERR_INVALID, 'malformed meta context request');
          break;
        }
        if (!knownName(name!)) {
          replyError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name!.slice(0, 64)}"`);
          break;
        }
        // base:allocation is our only context; "base:" is a wildcard for LIST only (proto.md "The base: namespace").
        const matches = isSet
          ? queries.some((q) => q === P.BASE_ALLOCATION)
          : queries.length === 0 || queries.some((q) => q === P.BASE_ALLOCATION || q === 'base:');
        if (matches) {
          const ctx = stringPayload(P.BASE_ALLOCATION);
          const b = Buffer.allocUnsafe(4 + ctx.length);
          b.writeUInt32BE(isSet ? BASE_ALLOCATION_ID : 0, 0);
          ctx.copy(b, 4);
          reply(option, P.NBD_REP_META_CONTEXT, b);
          if (isSet) allocationContextId = BASE_ALLOCATION_ID;
        }
        reply(option, P.NBD_REP_ACK);
        break;
      }
      default:
        replyError(option, P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }
  throw new NbdProtocolError(`more than ${MAX_OPTIONS} options during negotiation`);
}
