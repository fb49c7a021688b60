/**
 * NBD over TLS (proto.md "TLS support", NBD_OPT_STARTTLS) and read-only by
 * default: `vhdcrypt serve` driven by the real clients (nbdinfo and nbdcopy
 * from libnbd, qemu-img; GnuTLS underneath), TLS-PSK keys in psktool format
 * and X.509 certificates made here with the openssl CLI. The LUKS1 image is a
 * raw container made by qemu-img, so plaintext connections would be answered
 * by the native reply thread: over TLS every byte must go through the TLS
 * socket instead. The handshake rules are checked byte by byte in process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile, copyFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { NbdServer } from '../src/nbd/index.js';
import { openExportBacking } from '../src/nbd/open-export.js';
import { NbdTlsCredentials } from '../src/nbd/tls.js';
import * as P from '../src/nbd/protocol.js';
import { makeTempDir, run, runOk } from './helpers/nbd-harness.js';
import { startServe, type ServeProcess } from './helpers/nbd-serve-cli.js';
import { qemuEncryptLuks1 } from './helpers/qemu-luks.js';

const MIB = 1024 * 1024;
const PASS = 'tls test passphrase';
const CLI = join(__dirname, '..', 'bin', 'vhdcrypt.cjs');

/** Write a psktool-format key file readable by its owner only. */
async function writePsk(path: string, lines: Array<[string, Buffer]>, mode = 0o600): Promise<void> {
  await writeFile(path, lines.map(([u, k]) => `${u}:${k.toString('hex')}\n`).join(''), { mode });
  await chmod(path, mode);
}

/** libnbd 1.14 takes the TLS-PSK username from the URI's user part (nbds://alice@host/). */
function pskUri(uri: string, user: string, pskFile: string): string {
  return `${uri.replace(/^nbds:\/\//, `nbds://${user}@`)}?tls-psk-file=${pskFile}`;
}

/** pwrite 4096 bytes of `fill` at `offset` with libnbd's Python binding; prints OK or the errno name. */
const PWRITE = `
import errno, nbd, sys
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
try:
    h.pwrite(bytes([int(sys.argv[3])]) * 4096, int(sys.argv[2]))
    h.flush()
    print("OK")
except nbd.Error as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
h.shutdown()
`;

async function pwrite(uri: string, offset: number, fill: number): Promise<string> {
  const r = await runOk('python3', ['-c', PWRITE, uri, String(offset), String(fill)]);
  return r.stdout.toString().trim();
}

function cliRun(args: string[]): ReturnType<typeof run> {
  return run(process.execPath, [CLI, 'serve', ...args], { timeoutMs: 30_000 });
}

describe('vhdcrypt serve over TCP with TLS-PSK (LUKS1 in a raw container, as qemu-img makes it)', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let plain: Buffer;
  let enc: string;
  let passFile: string;
  let psk: string;
  let wrongPsk: string;
  let qemuDir: string;
  let srv: ServeProcess | null = null;

  beforeAll(async () => {
    tmp = await makeTempDir();
    plain = randomBytes(8 * MIB);
    const plainFile = join(tmp.dir, 'plain.raw');
    await writeFile(plainFile, plain);
    enc = join(tmp.dir, 'enc.luks');
    qemuEncryptLuks1(plainFile, enc, PASS);
    passFile = join(tmp.dir, 'pass');
    await writeFile(passFile, PASS);
    const key = randomBytes(32);
    psk = join(tmp.dir, 'keys.psk');
    await writePsk(psk, [['alice', key]]);
    wrongPsk = join(tmp.dir, 'wrong.psk');
    await writePsk(wrongPsk, [['alice', randomBytes(32)]]);
    // qemu's tls-creds-psk reads DIR/keys.psk.
    qemuDir = join(tmp.dir, 'qemu-psk');
    await mkdir(qemuDir);
    await writePsk(join(qemuDir, 'keys.psk'), [['alice', key]]);
  });
  afterAll(async () => {
    await srv?.stop();
    await tmp?.cleanup();
  });

  it('requires TLS by default, says so on its line, and nbdinfo and nbdcopy read the plaintext byte-exact through it', async () => {
    srv = await startServe([enc, '--passphrase-file', passFile, '--port', '0', '--tls-psk', psk, '--verbose']);
    expect(srv.line).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/ \(read-only, TLS-PSK required\)$/);
    const uri = pskUri(srv.uri, 'alice', psk);
    const info = JSON.parse((await runOk('nbdinfo', ['--json', uri])).stdout.toString());
    expect(info.TLS).toBe(true);
    expect(info.exports[0]['is_read_only']).toBe(true);
    expect(info.exports[0]['export-size']).toBe(plain.length);
    // nbdcopy opens 4 connections at once (CAN_MULTI_CONN) and reads in parallel.
    const out = join(tmp.dir, 'nbdcopy.raw');
    await runOk('nbdcopy', [uri, out]);
    expect((await readFile(out)).equals(plain)).toBe(true);
    expect(srv.stderr()).not.toMatch(/dropped/);
  });

  it('qemu-img reads it with --object tls-creds-psk, over TLS 1.3 and over TLS 1.2 (ECDHE-PSK)', async () => {
    const port = new URL(srv!.uri).port;
    // GnuTLS priority strings: its default, then TLS 1.3 taken away.
    for (const priority of ['', ',priority=NORMAL:-VERS-TLS1.3:+ECDHE-PSK']) {
      const out = join(tmp.dir, 'qemu.raw');
      await runOk('qemu-img', [
        'convert',
        '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuDir},username=alice${priority}`,
        '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},tls-creds=tls0`,
        '-O', 'raw', out,
      ]);
      expect((await readFile(out)).equals(plain), priority).toBe(true);
    }
  });

  it('refuses a client without TLS, one with a wrong key and one with an unknown username; then still serves', async () => {
    const port = new URL(srv!.uri).port;
    const plainClient = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/`]);
    expect(plainClient.code).not.toBe(0);
    expect(plainClient.stderr).toMatch(/TLS/);
    const wrong = await run('nbdinfo', ['--size', pskUri(srv!.uri, 'alice', wrongPsk)]);
    expect(wrong.code).not.toBe(0);
    const unknownUser = await run('nbdinfo', ['--size', pskUri(srv!.uri, 'bob', psk)]);
    expect(unknownUser.code).not.toBe(0);
    expect((await runOk('nbdinfo', ['--size', pskUri(srv!.uri, 'alice', psk)])).stdout.toString().trim()).toBe(String(plain.length));
    // No key byte in anything the server said about the failures.
    const key = (await readFile(psk, 'utf8')).split(':')[1]!.trim();
    expect(srv!.stderr()).toMatch(/TLS handshake failed/);
    expect(srv!.stderr()).not.toContain(key);
  });

  it('a write to the default (read-only) export fails with EPERM; with --writable it lands and QEMU decrypts it', async () => {
    expect(await pwrite(pskUri(srv!.uri, 'alice', psk), MIB, 0x5a)).toBe('EPERM');
    expect(await srv!.stop()).toBe(0);
    srv = await startServe([enc, '--passphrase-file', passFile, '--port', '0', '--tls-psk', psk, '--writable']);
    expect(srv.line).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/ \(writable, TLS-PSK required\)$/);
    expect(await pwrite(pskUri(srv.uri, 'alice', psk), MIB, 0x5a)).toBe('OK');
    expect(await srv.stop()).toBe(0);
    srv = null;
    plain.fill(0x5a, MIB, MIB + 4096);
    const q = join(tmp.dir, 'after-write.raw');
    await runOk('qemu-img', ['convert', '--object', `secret,id=s,data=${PASS}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${enc}`, '-O', 'raw', q]);
    expect((await readFile(q)).equals(plain)).toBe(true);
  });
});

describe('vhdcrypt serve with X.509 certificates (made by openssl here)', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let img: string;
  let data: Buffer;
  let serverDir: string;
  let clientDir: string;
  let caOnlyDir: string;
  let rogueDir: string;

  /** A CA (key and self-signed certificate) in `dir`. */
  async function makeCa(dir: string, cn: string): Promise<void> {
    await runOk('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'ca-key.pem'), '-out', join(dir, 'ca-cert.pem'), '-days', '2', '-subj', `/CN=${cn}`]);
  }
  /** A key and a certificate signed by the CA in `caDir`, written as `prefix`-key.pem and `prefix`-cert.pem in `outDir`. */
  async function issue(caDir: string, outDir: string, prefix: string, ext: string): Promise<void> {
    const csr = join(outDir, `${prefix}.csr`);
    const extFile = join(outDir, `${prefix}.ext`);
    await writeFile(extFile, ext);
    await runOk('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(outDir, `${prefix}-key.pem`), '-out', csr, '-subj', `/CN=${prefix}`]);
    await runOk('openssl', ['x509', '-req', '-in', csr, '-CA', join(caDir, 'ca-cert.pem'), '-CAkey', join(caDir, 'ca-key.pem'), '-CAcreateserial', '-out', join(outDir, `${prefix}-cert.pem`), '-days', '2', '-extfile', extFile]);
    await chmod(join(outDir, `${prefix}-key.pem`), 0o600);
  }

  beforeAll(async () => {
    tmp = await makeTempDir();
    data = randomBytes(4 * MIB);
    img = join(tmp.dir, 'plain.raw');
    await writeFile(img, data);
    const ca = join(tmp.dir, 'ca');
    const rogueCa = join(tmp.dir, 'rogue-ca');
    serverDir = join(tmp.dir, 'server');
    clientDir = join(tmp.dir, 'client');
    caOnlyDir = join(tmp.dir, 'ca-only');
    rogueDir = join(tmp.dir, 'rogue');
    for (const d of [ca, rogueCa, serverDir, clientDir, caOnlyDir, rogueDir]) await mkdir(d);
    await makeCa(ca, 'vhdcrypt test CA');
    await makeCa(rogueCa, 'another CA');
    // libnbd checks the server's name against the certificate: 127.0.0.1 as an IP subjectAltName.
    await issue(ca, serverDir, 'server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    await issue(ca, clientDir, 'client', 'extendedKeyUsage=clientAuth\n');
    await issue(rogueCa, rogueDir, 'client', 'extendedKeyUsage=clientAuth\n');
    for (const d of [serverDir, clientDir, caOnlyDir]) await copyFile(join(ca, 'ca-cert.pem'), join(d, 'ca-cert.pem'));
    // The rogue client trusts the real CA (so it accepts the server) but presents a certificate of another CA.
    await copyFile(join(ca, 'ca-cert.pem'), join(rogueDir, 'ca-cert.pem'));
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('with --tls-verify-peer: a client certificate of the CA reads the disk; none, or one of another CA, is refused', async () => {
    const srv = await startServe([img, '--plaintext', '--port', '0', '--tls-certificates', serverDir, '--tls-verify-peer', '--verbose']);
    try {
      expect(srv.line).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/ \(read-only, TLS-X\.509 required\)$/);
      const out = join(tmp.dir, 'x509.raw');
      await runOk('nbdcopy', [`${srv.uri}?tls-certificates=${clientDir}`, out]);
      expect((await readFile(out)).equals(data)).toBe(true);
      const noCert = await run('nbdinfo', ['--size', `${srv.uri}?tls-certificates=${caOnlyDir}`]);
      expect(noCert.code).not.toBe(0);
      const rogue = await run('nbdinfo', ['--size', `${srv.uri}?tls-certificates=${rogueDir}`]);
      expect(rogue.code).not.toBe(0);
      expect(srv.stderr()).toMatch(/TLS handshake failed/);
    } finally {
      expect(await srv.stop()).toBe(0);
    }
  });

  it('without --tls-verify-peer a client that only trusts the CA reads it', async () => {
    const srv = await startServe([img, '--plaintext', '--port', '0', '--tls-certificates', serverDir]);
    try {
      const r = await runOk('nbdinfo', ['--size', `${srv.uri}?tls-certificates=${caOnlyDir}`]);
      expect(r.stdout.toString().trim()).toBe(String(data.length));
    } finally {
      expect(await srv.stop()).toBe(0);
    }
  });

  it('refuses a server key that group or others can read', async () => {
    await chmod(join(serverDir, 'server-key.pem'), 0o640);
    try {
      const r = await cliRun([img, '--port', '0', '--tls-certificates', serverDir]);
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/server-key\.pem.*chmod 600/);
    } finally {
      await chmod(join(serverDir, 'server-key.pem'), 0o600);
    }
  });
});

describe('vhdcrypt serve: refusals before anything is served', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let img: string;
  let psk: string;
  const key = randomBytes(32);
  beforeAll(async () => {
    tmp = await makeTempDir();
    img = join(tmp.dir, 'plain.raw');
    await writeFile(img, Buffer.alloc(MIB));
    psk = join(tmp.dir, 'keys.psk');
    await writePsk(psk, [['alice', key]]);
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('plaintext on a non-loopback address, TLS without credentials, and contradictory flags are usage errors (exit 2)', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--port', '0', '--bind', '0.0.0.0', '--tls', 'off'], /--bind 0\.0\.0\.0 is not a loopback address/],
      [['--port', '0', '--bind', '0.0.0.0', '--tls', 'on', '--tls-psk', psk], /--bind 0\.0\.0\.0 is not a loopback address/],
      [['--port', '0'], /--tls require \(the default over TCP\) needs --tls-psk FILE or --tls-certificates DIR/],
      [['--socket', join(tmp.dir, 's.sock'), '--tls', 'require'], /needs --tls-psk FILE or --tls-certificates DIR/],
      [['--port', '0', '--tls', 'off', '--tls-psk', psk], /no use with --tls off/],
      [['--port', '0', '--tls-psk', psk, '--tls-certificates', tmp.dir], /not both/],
      [['--port', '0', '--tls-psk', psk, '--tls-verify-peer'], /--tls-verify-peer needs --tls-certificates/],
      [['--port', '0', '--tls', 'maybe'], /--tls expects require, on or off/],
      [['--socket', join(tmp.dir, 's.sock'), '--writable', '--read-only'], /--writable or --read-only/],
    ];
    for (const [args, message] of cases) {
      const r = await cliRun([img, ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });

  it('a PSK file readable by group or others, or malformed, is refused (exit 3) without a key byte in the message', async () => {
    const exposed = join(tmp.dir, 'exposed.psk');
    await writePsk(exposed, [['alice', key]], 0o644);
    const r = await cliRun([img, '--port', '0', '--tls-psk', exposed]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/readable or writable by group or others \(mode 644\); chmod 600/);
    expect(r.stderr).not.toContain(key.toString('hex'));

    const bad = join(tmp.dir, 'bad.psk');
    const secretish = `${key.toString('hex').slice(0, 40)}zz`;
    await writeFile(bad, `alice:${secretish}\n`, { mode: 0o600 });
    const b = await cliRun([img, '--port', '0', '--tls-psk', bad]);
    expect(b.code).toBe(3);
    expect(b.stderr).toMatch(/line 1: the key of "alice" is not hexadecimal/);
    expect(b.stderr).not.toContain(secretish.slice(0, 16));

    const short = join(tmp.dir, 'short.psk');
    await writePsk(short, [['alice', randomBytes(8)]]);
    const s = await cliRun([img, '--port', '0', '--tls-psk', short]);
    expect(s.code).toBe(3);
    expect(s.stderr).toMatch(/16\.\.64 bytes/);
  });

  it('a Unix socket export is read-only (EPERM) without TLS unless --writable', async () => {
    const srv = await startServe([img, '--plaintext', '--socket', join(tmp.dir, 'ro.sock')]);
    try {
      expect(srv.line).toBe(`nbd+unix:///?socket=${join(tmp.dir, 'ro.sock')} (read-only, no TLS)`);
      expect(await pwrite(srv.uri, 0, 7)).toBe('EPERM');
    } finally {
      expect(await srv.stop()).toBe(0);
    }
    const rw = await startServe([img, '--plaintext', '--socket', join(tmp.dir, 'rw.sock'), '--writable']);
    try {
      expect(rw.line).toBe(`nbd+unix:///?socket=${join(tmp.dir, 'rw.sock')} (writable, no TLS)`);
      expect(await pwrite(rw.uri, 0, 7)).toBe('OK');
    } finally {
      expect(await rw.stop()).toBe(0);
    }
    expect((await readFile(img)).subarray(0, 4096).every((b) => b === 7)).toBe(true);
  });
});

/** A byte-level NBD client for the handshake rules; `upgrade` moves it onto a TLS socket. */
class Wire {
  private got = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  closed = false;
  readonly gone: Promise<void>;
  private markGone!: () => void;

  constructor(public socket: Socket) {
    this.gone = new Promise((r) => (this.markGone = r));
    this.attach(socket);
  }

  private readonly onData = (c: Buffer): void => {
    this.got = Buffer.concat([this.got, c]);
    this.wake?.();
  };
  private readonly onClose = (): void => {
    this.closed = true;
    this.markGone();
    this.wake?.();
  };

  private attach(s: Socket): void {
    s.on('data', this.onData);
    s.on('close', this.onClose);
    s.on('error', () => undefined);
  }

  static async open(path: string): Promise<Wire> {
    const s = connect(path);
    await new Promise((r, j) => s.once('connect', r).once('error', j));
    const w = new Wire(s);
    const greeting = await w.need(18);
    expect(greeting.readBigUInt64BE(8)).toBe(P.NBD_OPTS_MAGIC);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    s.write(flags);
    return w;
  }

  async need(n: number): Promise<Buffer> {
    while (this.got.length < n) {
      if (this.closed) throw new Error('closed');
      await new Promise<void>((r) => (this.wake = r));
    }
    const out = this.got.subarray(0, n);
    this.got = this.got.subarray(n);
    return out;
  }

  send(option: number, payload?: Uint8Array): void {
    this.socket.write(P.encodeOption(option, payload));
  }

  /** The next option reply: its type and payload. */
  async reply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.need(P.OPTION_REPLY_HEADER_LEN);
    expect(h.readBigUInt64BE(0)).toBe(P.NBD_REP_MAGIC);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.need(h.readUInt32BE(16)) };
  }

  /** Run a PSK TLS client handshake on the current socket. */
  async upgrade(identity: string, psk: Buffer): Promise<void> {
    expect(this.got.length).toBe(0);
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    const t = tlsConnect({ socket: this.socket, pskCallback: () => ({ psk, identity }), checkServerIdentity: () => undefined });
    this.socket = t;
    this.attach(t);
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', resolve);
      t.once('error', reject);
      t.once('close', () => reject(new Error('closed during the TLS handshake')));
    });
  }
}

function goPayload(): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt32BE(0, 0); // empty name: the default export
  b.writeUInt16BE(0, 4); // no information requests
  return b;
}

describe('STARTTLS negotiation (proto.md "TLS support"), in process', () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let img: string;
  let creds: NbdTlsCredentials;
  const key = randomBytes(32);
  let server: NbdServer | null = null;
  let sock: string;

  beforeAll(async () => {
    tmp = await makeTempDir();
    img = join(tmp.dir, 'plain.raw');
    await writeFile(img, randomBytes(MIB));
    const psk = join(tmp.dir, 'keys.psk');
    await writePsk(psk, [['alice', key]]);
    creds = await NbdTlsCredentials.loadPsk(psk);
  });
  afterAll(async () => {
    await server?.close();
    creds?.dispose();
    await tmp?.cleanup();
  });

  const logged: string[] = [];

  async function serveWith(tls: { mode: 'require' | 'on' } | null, handshakeTimeoutMs = 30_000): Promise<void> {
    await server?.close();
    logged.length = 0;
    server = new NbdServer(await openExportBacking(img, { readOnly: true, plaintext: true }), {
      handshakeTimeoutMs,
      log: (line) => logged.push(line),
      ...(tls !== null ? { tls: { mode: tls.mode, credentials: creds } } : {}),
    });
    sock = join(tmp.dir, `s${Math.random().toString(36).slice(2)}.sock`);
    await server.listen({ socketPath: sock });
  }

  it('require: options before TLS get TLS_REQD; STARTTLS is acknowledged; after TLS the session works and a second STARTTLS is INVALID', async () => {
    await serveWith({ mode: 'require' });
    const w = await Wire.open(sock);
    for (const opt of [P.NBD_OPT_LIST, P.NBD_OPT_STRUCTURED_REPLY, P.NBD_OPT_GO, P.NBD_OPT_INFO]) {
      w.send(opt, opt === P.NBD_OPT_GO || opt === P.NBD_OPT_INFO ? goPayload() : undefined);
      const r = await w.reply();
      expect([r.option, r.type]).toEqual([opt, P.NBD_REP_ERR_TLS_REQD]);
    }
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ACK);
    await w.upgrade('alice', key);
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ERR_INVALID);
    w.send(P.NBD_OPT_LIST);
    expect((await w.reply()).type).toBe(P.NBD_REP_SERVER);
    expect((await w.reply()).type).toBe(P.NBD_REP_ACK);
    w.send(P.NBD_OPT_GO, goPayload());
    const info = await w.reply();
    expect(info.type).toBe(P.NBD_REP_INFO);
    expect(info.data.readBigUInt64BE(2)).toBe(BigInt(MIB));
    expect(info.data.readUInt16BE(10) & P.NBD_FLAG_READ_ONLY).toBe(P.NBD_FLAG_READ_ONLY);
    for (let more = (await w.reply()).type; more !== P.NBD_REP_ACK; more = (await w.reply()).type) expect(more).toBe(P.NBD_REP_INFO);
    // In transmission over TLS: still tracked, so close() reaches it (and disconnects it).
    expect(server!.connectionCount).toBe(1);
    await server!.close();
    await w.gone;
    server = null;
  });

  it('require: EXPORT_NAME before TLS ends the session without an answer', async () => {
    await serveWith({ mode: 'require' });
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_EXPORT_NAME);
    await w.gone;
    await expect(w.need(1)).rejects.toThrow('closed');
  });

  it('bytes sent behind STARTTLS, before its ACK, end the connection (no plaintext read as if it were TLS)', async () => {
    await serveWith({ mode: 'require' });
    const w = await Wire.open(sock);
    w.socket.write(Buffer.concat([P.encodeOption(P.NBD_OPT_STARTTLS), P.encodeOption(P.NBD_OPT_LIST)]));
    await w.gone;
    await expect(w.need(1)).rejects.toThrow('closed');
  });

  it('a client that stalls the TLS handshake is dropped at the handshake timeout', async () => {
    await serveWith({ mode: 'require' }, 300);
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ACK);
    // The server closed it (this client never does), and said why.
    await w.gone;
    expect(logged).toContain('nbd: handshake timed out');
  });

  it('a wrong PSK fails the handshake and the connection is closed', async () => {
    await serveWith({ mode: 'require' });
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ACK);
    await expect(w.upgrade('alice', randomBytes(32))).rejects.toThrow();
    await w.gone;
  });

  it('on: a plaintext client is served, and a client may still upgrade', async () => {
    await serveWith({ mode: 'on' });
    expect(server!.uri).toMatch(/^nbd\+unix:/);
    const plainClient = await Wire.open(sock);
    plainClient.send(P.NBD_OPT_LIST);
    expect((await plainClient.reply()).type).toBe(P.NBD_REP_SERVER);
    expect((await plainClient.reply()).type).toBe(P.NBD_REP_ACK);
    plainClient.socket.destroy();
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ACK);
    await w.upgrade('alice', key);
    w.send(P.NBD_OPT_LIST);
    expect((await w.reply()).type).toBe(P.NBD_REP_SERVER);
    w.socket.destroy();
  });

  it('without TLS credentials STARTTLS is unsupported', async () => {
    await serveWith(null);
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_STARTTLS);
    expect((await w.reply()).type).toBe(P.NBD_REP_ERR_UNSUP);
    w.socket.destroy();
  });

  it('dispose() wipes the PSK bytes; connections after it cannot upgrade', async () => {
    const psk = join(tmp.dir, 'dispose.psk');
    const k = randomBytes(32);
    await writePsk(psk, [['alice', k]]);
    const c = await NbdTlsCredentials.loadPsk(psk);
    // The key buffers themselves (private): they must read as zeros after dispose().
    const held = [...(c as unknown as { psk: Map<string, Buffer> }).psk.values()];
    expect(held.length).toBe(1);
    expect(held[0]!.equals(k)).toBe(true);
    c.dispose();
    expect(held[0]!.every((b) => b === 0)).toBe(true);
    await server?.close();
    server = new NbdServer(await openExportBacking(img, { readOnly: true, plaintext: true }), { tls: { mode: 'require', credentials: c } });
    sock = join(tmp.dir, 'disposed.sock');
    await server.listen({ socketPath: sock });
    const w = await Wire.open(sock);
    w.send(P.NBD_OPT_STARTTLS);
    await w.gone;
  });
});
