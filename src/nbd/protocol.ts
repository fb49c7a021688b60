/**
 * The NBD wire format: magic numbers, option/reply/command/flag/error values
 * and the fixed-size message layouts, as doc/proto.md of the nbd project
 * ("The NBD protocol") defines them. One source of truth for server and client.
 */

// Handshake (proto.md "Newstyle negotiation").
export const NBD_MAGIC = 0x4e42444d41474943n; // 'NBDMAGIC'
export const NBD_OPTS_MAGIC = 0x49484156454f5054n; // 'IHAVEOPT'
export const NBD_REP_MAGIC = 0x3e889045565a9n; // option reply magic

// Handshake flags (proto.md "Handshake flags") and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (proto.md "Transmission flags").
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Option types (proto.md "Option types").
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option reply types (proto.md "Option reply types"); errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x8000_0000;
export const NBD_REP_ERR_UNSUP = 0x8000_0001;
export const NBD_REP_ERR_POLICY = 0x8000_0002;
export const NBD_REP_ERR_INVALID = 0x8000_0003;
export const NBD_REP_ERR_PLATFORM = 0x8000_0004;
export const NBD_REP_ERR_TLS_REQD = 0x8000_0005;
export const NBD_REP_ERR_UNKNOWN = 0x8000_0006;
export const NBD_REP_ERR_SHUTDOWN = 0x8000_0007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x8000_0008;
export const NBD_REP_ERR_TOO_BIG = 0x8000_0009;

// NBD_REP_INFO information types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission phase (proto.md "Request message", "Simple reply", "Structured reply chunk").
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Command flags (proto.md "Command flags").
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Request types (proto.md "Request types").
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Structured reply flags and types (proto.md "Structured reply types").
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = 0x8001;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 0x8002;
export const NBD_REPLY_TYPE_FLAG_ERROR = 0x8000;

// base:allocation flags (proto.md "`base:allocation` metadata context").
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = 'base:allocation';

// Error values (proto.md "Error values").
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Sizes of the fixed parts of messages, in bytes. */
export const HANDSHAKE_SERVER_LEN = 18; // NBDMAGIC + IHAVEOPT + 16-bit flags
export const OPTION_HEADER_LEN = 16; // IHAVEOPT + option + length
export const OPTION_REPLY_HEADER_LEN = 20; // magic + option + type + length
export const REQUEST_HEADER_LEN = 28;
export const SIMPLE_REPLY_LEN = 16;
export const STRUCTURED_REPLY_HEADER_LEN = 20;
export const EXPORT_NAME_PAD_LEN = 124;

/** Strings (export names, queries, messages) must be at most 4096 bytes (proto.md "Conventions"). */
export const MAX_STRING_LEN = 4096;
/** Payloads up to 32 MiB must never be treated as an attack (proto.md "Size constraints"). */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;

/** A decoded transmission-phase request header. */
export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: bigint;
  readonly length: number;
}

/** Decode the 28-byte request header at `b[at]`; the caller checked the magic. */
export function decodeRequestHeader(b: Uint8Array, at = 0): RequestHeader & { magic: number } {
  const v = new DataView(b.buffer, b.byteOffset + at, REQUEST_HEADER_LEN);
  return {
    magic: v.getUint32(0),
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getBigUint64(16),
    length: v.getUint32(24),
  };
}

/** Encode a request header (the client side). */
export function encodeRequestHeader(h: RequestHeader): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_LEN);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeBigUInt64BE(h.offset, 16);
  b.writeUInt32BE(h.length, 24);
  return b;
}

/** A simple reply (16 bytes); read data, if any, follows separately. */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_LEN);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

/** A structured reply chunk header (20 bytes) followed by `extra` bytes allocated for the caller to fill. */
export function encodeChunkHeader(flags: number, type: number, cookie: bigint, payloadLength: number, extra = 0): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LEN + extra);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(payloadLength, 16);
  return b;
}

/** The header of an OFFSET_DATA chunk (its data follows separately). */
export function encodeOffsetDataHeader(flags: number, cookie: bigint, offset: bigint, dataLength: number): Buffer {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_DATA, cookie, 8 + dataLength, 8);
  b.writeBigUInt64BE(offset, 20);
  return b;
}

/** An OFFSET_HOLE chunk. */
export function encodeOffsetHole(flags: number, cookie: bigint, offset: bigint, length: number): Buffer {
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12, 12);
  b.writeBigUInt64BE(offset, 20);
  b.writeUInt32BE(length, 28);
  return b;
}

/** An ERROR chunk with a short human-readable message. */
export function encodeErrorChunk(flags: number, cookie: bigint, error: number, message: string): Buffer {
  const msg = Buffer.from(message.slice(0, 200), 'utf8');
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_ERROR, cookie, 6 + msg.length, 6 + msg.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  return b;
}

/** A BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatusChunk(
  flags: number,
  cookie: bigint,
  contextId: number,
  extents: ReadonlyArray<{ length: number; flags: number }>,
): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = encodeChunkHeader(flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookie, payload, payload);
  b.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const e of extents) {
    b.writeUInt32BE(e.length, at);
    b.writeUInt32BE(e.flags, at + 4);
    at += 8;
  }
  return b;
}

/** An option reply (fixed newstyle) with its payload. */
export function encodeOptionReply(option: number, type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LEN + payload.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(payload.length, 16);
  b.set(payload, 20);
  return b;
}

/** An option request (the client side). */
export function encodeOption(option: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_LEN + payload.length);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(payload.length, 12);
  b.set(payload, 16);
  return b;
}

/** Human-readable names of commands, for error messages. */
export function commandName(type: number): string {
  switch (type) {
    case NBD_CMD_READ: return 'READ';
    case NBD_CMD_WRITE: return 'WRITE';
    case NBD_CMD_DISC: return 'DISC';
    case NBD_CMD_FLUSH: return 'FLUSH';
    case NBD_CMD_TRIM: return 'TRIM';
    case NBD_CMD_CACHE: return 'CACHE';
    case NBD_CMD_WRITE_ZEROES: return 'WRITE_ZEROES';
    case NBD_CMD_BLOCK_STATUS: return 'BLOCK_STATUS';
    default: return `command ${type}`;
  }
}
