/** Positional access to a LUKS header held in memory or in a file/device; reads only what is asked. */
import { open, type FileHandle } from 'node:fs/promises';
import { LuksError } from './errors.js';

/**
 * Anything that reads and writes bytes at offsets, e.g. a DiskImage/WritableImage
 * of src/image holding a LUKS volume; the caller opens and closes it.
 */
export interface LuksBlockDevice {
  readonly virtualSize: bigint;
  /** false: opened read-only (write operations refuse before touching it). */
  readonly writable?: boolean;
  read(offset: bigint, into: Uint8Array): Promise<void>;
  write?(offset: bigint, data: Uint8Array): Promise<void>;
  flush?(): Promise<void>;
}

/** Header bytes in memory (edited in place by write operations), a file/device path, or an open block device. */
export type LuksTarget = Uint8Array | string | LuksBlockDevice;

export interface HeaderIo {
  /** Size of the device or buffer in bytes. */
  readonly size: bigint;
  readonly name: string;
  /** Exactly `length` bytes at `offset`, or LUKS_TRUNCATED. */
  read(offset: number, length: number, what: string): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Flush writes to stable storage (files). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

function truncated(name: string, what: string, offset: number, length: number, size: bigint): LuksError {
  return new LuksError('LUKS_TRUNCATED', `${name}: ${what} needs bytes [${offset}, ${offset + length}) but the device has ${size} bytes`);
}

function memoryIo(buf: Uint8Array): HeaderIo {
  const name = 'header buffer';
  return {
    size: BigInt(buf.length),
    name,
    async read(offset, length, what) {
      if (offset + length > buf.length) throw truncated(name, what, offset, length, BigInt(buf.length));
      // A copy, never a view: callers decrypt and wipe what they read, and Buffer#slice would share the caller's bytes.
      return Uint8Array.prototype.slice.call(buf, offset, offset + length);
    },
    async write(offset, data) {
      if (offset + data.length > buf.length) throw truncated(name, 'write', offset, data.length, BigInt(buf.length));
      buf.set(data, offset);
    },
    async sync() {},
    async close() {},
  };
}

async function fileSize(fh: FileHandle): Promise<bigint> {
  const st = await fh.stat({ bigint: true });
  if (st.isFile()) return st.size;
  // A block device reports size 0 in stat; read() then meets EOF, reported as truncated.
  return st.size > 0n ? st.size : BigInt(Number.MAX_SAFE_INTEGER);
}

async function fileIo(path: string, writable: boolean): Promise<HeaderIo> {
  const fh = await open(path, writable ? 'r+' : 'r');
  const size = await fileSize(fh);
  return {
    size,
    name: path,
    async read(offset, length, what) {
      if (BigInt(offset + length) > size) throw truncated(path, what, offset, length, size);
      const out = new Uint8Array(length);
      let n = 0;
      while (n < length) {
        const { bytesRead } = await fh.read(out, n, length - n, offset + n);
        if (bytesRead === 0) throw truncated(path, what, offset, length, BigInt(offset + n));
        n += bytesRead;
      }
      return out;
    },
    async write(offset, data) {
      let n = 0;
      while (n < data.length) {
        const { bytesWritten } = await fh.write(data, n, data.length - n, offset + n);
        n += bytesWritten;
      }
    },
    async sync() {
      await fh.sync();
    },
    async close() {
      await fh.close();
    },
  };
}

function deviceIo(dev: LuksBlockDevice, writable: boolean): HeaderIo {
  const name = 'block device';
  const size = dev.virtualSize;
  return {
    size,
    name,
    async read(offset, length, what) {
      if (BigInt(offset + length) > size) throw truncated(name, what, offset, length, size);
      const out = new Uint8Array(length);
      await dev.read(BigInt(offset), out);
      return out;
    },
    async write(offset, data) {
      if (!writable || !dev.write || dev.writable === false) throw new LuksError('LUKS_BAD_ARG', 'the block device given is not writable');
      if (BigInt(offset + data.length) > size) throw truncated(name, 'write', offset, data.length, size);
      await dev.write(BigInt(offset), data);
    },
    async sync() {
      await dev.flush?.();
    },
    // The caller owns the device.
    async close() {},
  };
}

function isBlockDevice(t: unknown): t is LuksBlockDevice {
  return typeof t === 'object' && t !== null && typeof (t as LuksBlockDevice).virtualSize === 'bigint' && typeof (t as LuksBlockDevice).read === 'function';
}

/** Opens a target for positional I/O; the caller closes it. */
export async function openHeaderIo(target: LuksTarget, writable: boolean): Promise<HeaderIo> {
  if (target instanceof Uint8Array) return memoryIo(target);
  if (typeof target === 'string') return fileIo(target, writable);
  if (isBlockDevice(target)) return deviceIo(target, writable);
  throw new LuksError('LUKS_BAD_ARG', 'target expected Uint8Array header bytes, a file path or a block device');
}

/** Runs fn with an open io and always closes it. */
export async function withHeaderIo<T>(target: LuksTarget, writable: boolean, fn: (io: HeaderIo) => Promise<T>): Promise<T> {
  const io = await openHeaderIo(target, writable);
  try {
    return await fn(io);
  } finally {
    await io.close();
  }
}
