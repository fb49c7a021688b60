/**
 * TLS for the NBD server (proto.md "TLS support", NBD_OPT_STARTTLS): the
 * credentials `vhdcrypt serve` loads (TLS-PSK from a psktool-format file, or
 * X.509 from a directory laid out as qemu-nbd and nbdkit expect) and the
 * upgrade of a plain socket once STARTTLS has been acknowledged.
 *
 * Who loads credentials disposes of them (the PSK bytes and the private key's
 * PEM are wiped); a server given credentials never wipes them.
 */
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import type { Socket } from 'node:net';
import { NbdError } from './errors.js';

/** require: plaintext clients get nothing but NBD_REP_ERR_TLS_REQD; on: TLS is offered, plaintext still served; off: no TLS. */
export type NbdTlsMode = 'require' | 'on' | 'off';

/** A psk file larger than this is not a key list. */
const MAX_PSK_FILE = 1024 * 1024;
/** PSK lengths accepted: at least 128 bits; psktool makes 32 bytes by default. */
const MIN_PSK_BYTES = 16;
const MAX_PSK_BYTES = 64;

/**
 * PSK over TLS 1.3 (RFC 8446 section 4.2.11, external PSK with (EC)DHE key exchange, "psk_dhe_ke"): OpenSSL
 * answers a TLS 1.3 external PSK through the same server callback, with a SHA-256 cipher suite, which is what
 * GnuTLS clients (libnbd, qemu) offer. TLS 1.2 is accepted too for older GnuTLS peers, restricted to PSK suites
 * with ephemeral key exchange (forward secrecy); plain "PSK-" suites, which derive every session key from the
 * PSK alone, are left out. Node enables no PSK suite unless `ciphers` names one.
 */
const PSK_CIPHERS =
  // TLS 1.3: the legacy PSK callback needs a SHA-256 suite; AES-GCM first, as AES-NI makes it the cheaper one here.
  'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:' +
  'ECDHE-PSK-AES256-GCM-SHA384:ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:ECDHE-PSK-AES128-CBC-SHA256';

/** Server-side TLS credentials, either kind. */
export class NbdTlsCredentials {
  private disposed = false;

  private constructor(
    /** 'TLS-PSK' or 'TLS-X.509', for the line `serve` prints. */
    readonly label: 'TLS-PSK' | 'TLS-X.509',
    private readonly psk: Map<string, Buffer> | null,
    private readonly x509: { readonly key: Buffer; readonly cert: Buffer; readonly ca: Buffer | null; readonly verifyPeer: boolean } | null,
  ) {}

  /**
   * Load a psktool/nbdkit/qemu PSK file: lines `username:hexkey`. Refused when group or others may read it
   * (as ssh refuses an exposed private key), and when any line is malformed; no key byte reaches a message.
   */
  static async loadPsk(path: string): Promise<NbdTlsCredentials> {
    const fh = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new NbdError('NBD_TLS_PSK_FILE', `cannot open the TLS-PSK file ${path}: ${e.code ?? e.message}`, { cause: e });
    });
    let raw: Buffer | null = null;
    const keys = new Map<string, Buffer>();
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new NbdError('NBD_TLS_PSK_FILE', `the TLS-PSK file ${path} is not a regular file`);
      if ((st.mode & 0o077) !== 0) {
        throw new NbdError(
          'NBD_TLS_PSK_FILE_EXPOSED',
          `the TLS-PSK file ${path} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
        );
      }
      if (st.size > MAX_PSK_FILE) throw new NbdError('NBD_TLS_PSK_FILE', `the TLS-PSK file ${path} is larger than ${MAX_PSK_FILE} bytes`);
      raw = await fh.readFile();
      parsePskLines(raw, path, keys);
      if (keys.size === 0) throw new NbdError('NBD_TLS_PSK_FILE', `the TLS-PSK file ${path} holds no username:hexkey line`);
      return new NbdTlsCredentials('TLS-PSK', keys, null);
    } catch (e) {
      for (const k of keys.values()) k.fill(0);
      throw e;
    } finally {
      raw?.fill(0);
      await fh.close();
    }
  }

  /**
   * Load X.509 credentials from `dir` as qemu-nbd and nbdkit name them: server-cert.pem, server-key.pem and,
   * for `verifyPeer` (a client certificate signed by that CA is required), ca-cert.pem.
   */
  static async loadX509(dir: string, verifyPeer: boolean): Promise<NbdTlsCredentials> {
    const read = async (name: string, required: boolean, secret = false): Promise<Buffer | null> => {
      const path = join(dir, name);
      const fh = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' && !required) return null;
        throw new NbdError('NBD_TLS_CERTIFICATES', `cannot open ${path}: ${e.code ?? e.message}`, { cause: e });
      });
      if (fh === null) return null;
      try {
        const st = await fh.stat();
        if (!st.isFile() || st.size > MAX_PSK_FILE) throw new NbdError('NBD_TLS_CERTIFICATES', `${path} is not a regular file of at most ${MAX_PSK_FILE} bytes`);
        if (secret && (st.mode & 0o077) !== 0) {
          throw new NbdError('NBD_TLS_CERTIFICATES_EXPOSED', `${path} is readable or writable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
        }
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    };
    const cert = (await read('server-cert.pem', true))!;
    const ca = await read('ca-cert.pem', verifyPeer);
    const key = (await read('server-key.pem', true, true))!;
    return new NbdTlsCredentials('TLS-X.509', null, { key, cert, ca, verifyPeer });
  }

  /** Wipe the key material; connections upgraded later fail. Idempotent. */
  dispose(): void {
    this.disposed = true;
    if (this.psk !== null) for (const k of this.psk.values()) k.fill(0);
    this.psk?.clear();
    this.x509?.key.fill(0);
  }

  /** The node:tls server options of one connection's upgrade. */
  private tlsOptions(): TlsOptions {
    if (this.disposed) throw new NbdError('NBD_TLS_DISPOSED', 'the TLS credentials were disposed');
    if (this.psk !== null) {
      const psk = this.psk;
      return {
        ciphers: PSK_CIPHERS,
        minVersion: 'TLSv1.2',
        // An unknown identity gets no key: the handshake fails (the same alert as a wrong key).
        pskCallback: (_socket: TLSSocket, identity: string) => psk.get(identity) ?? null,
      } as TlsOptions;
    }
    const x = this.x509!;
    return {
      key: x.key,
      cert: x.cert,
      ...(x.ca !== null ? { ca: x.ca } : {}),
      minVersion: 'TLSv1.2',
      requestCert: x.verifyPeer,
      rejectUnauthorized: x.verifyPeer,
    };
  }

  /**
   * Run the TLS server handshake on `socket`, whose STARTTLS ACK has been written and which nobody else reads.
   * A throwaway tls.Server does the wrap so node's own peer-certificate check (rejectUnauthorized) applies:
   * a bare TLSSocket in server mode never checks the chain it receives.
   */
  upgrade(socket: Socket): Promise<TLSSocket> {
    const server = createTlsServer(this.tlsOptions());
    return new Promise<TLSSocket>((resolve, reject) => {
      server.once('secureConnection', (tlsSocket: TLSSocket) => resolve(tlsSocket));
      server.once('tlsClientError', (e: Error, tlsSocket: TLSSocket) => {
        tlsSocket.destroy();
        reject(new NbdError('NBD_TLS_HANDSHAKE', `TLS handshake failed: ${e.message}`, { cause: e }));
      });
      // The raw socket closing before the handshake ends is reported here (node destroys the TLS socket with it).
      socket.once('close', () => reject(new NbdError('NBD_TLS_HANDSHAKE', 'the client closed the connection during the TLS handshake')));
      server.emit('connection', socket);
    });
  }
}

/** Parse `username:hexkey` lines (CR LF tolerated, empty lines skipped) into `keys`, without a string of any key. */
function parsePskLines(raw: Buffer, path: string, keys: Map<string, Buffer>): void {
  let lineNo = 0;
  for (let start = 0; start < raw.length; ) {
    let end = raw.indexOf(0x0a, start);
    if (end < 0) end = raw.length;
    lineNo++;
    let stop = end;
    if (stop > start && raw[stop - 1] === 0x0d) stop--;
    const next = end + 1;
    if (stop > start) {
      const colon = raw.indexOf(0x3a, start);
      if (colon < 0 || colon >= stop || colon === start) throw new NbdError('NBD_TLS_PSK_FILE', `${path} line ${lineNo}: expected username:hexkey`);
      const user = raw.toString('utf8', start, colon);
      const hexLen = stop - colon - 1;
      if (hexLen % 2 !== 0 || hexLen / 2 < MIN_PSK_BYTES || hexLen / 2 > MAX_PSK_BYTES) {
        throw new NbdError('NBD_TLS_PSK_FILE', `${path} line ${lineNo}: the key of "${user}" must be ${MIN_PSK_BYTES}..${MAX_PSK_BYTES} bytes as an even number of hex digits`);
      }
      if (keys.has(user)) throw new NbdError('NBD_TLS_PSK_FILE', `${path} line ${lineNo}: username "${user}" appears twice`);
      // Its own allocation (not the shared pool), so dispose() wipes exactly these bytes.
      const key = Buffer.alloc(hexLen / 2);
      for (let i = 0; i < key.length; i++) {
        const hi = hexNibble(raw[colon + 1 + 2 * i]!);
        const lo = hexNibble(raw[colon + 2 + 2 * i]!);
        if (hi < 0 || lo < 0) {
          key.fill(0);
          throw new NbdError('NBD_TLS_PSK_FILE', `${path} line ${lineNo}: the key of "${user}" is not hexadecimal`);
        }
        key[i] = (hi << 4) | lo;
      }
      keys.set(user, key);
    }
    start = next;
  }
}

function hexNibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
