/** `vhdcrypt serve`: export an image (decrypted, when it is encrypted) over NBD until SIGINT/SIGTERM. */
import type { Command } from 'commander';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhdcryptError } from '../errors.js';
import { SECTOR_SIZES, type SectorSize } from '../volume/index.js';
import type { NbdEndpoint } from '../nbd/index.js';
import { MAX_BEK_BYTES } from '../bitlocker/index.js';
import type { OpenExportOptions } from '../nbd/open-export.js';
import { addPkcs11Options, withPkcs11, type Pkcs11Flags } from './pkcs11-command.js';
import { addParentOptions, parentOptions } from './image-commands.js';

interface ServeOptions extends Pkcs11Flags {
  socket?: string;
  port?: string;
  bind?: string;
  readOnly?: boolean;
  writable?: boolean;
  tls?: string;
  tlsPsk?: string;
  tlsCertificates?: string;
  tlsVerifyPeer?: boolean;
  exportName?: string;
  vault?: string;
  passphraseFile?: string;
  keyFile?: string;
  plain?: boolean;
  plaintext?: boolean;
  secret?: string;
  recoveryPasswordFile?: string;
  bekFile?: string;
  parentDir?: string[];
  allowAbsoluteParents?: boolean;
  sectorSize?: string;
  backend?: string;
  replyThreads?: boolean;
  idleTimeout?: string;
  maxConnectionsPerPeer?: string;
  verbose?: boolean;
  usePkcs11Token?: boolean;
}

/** --recovery-password-file and --bek-file: keys of BitLocker disks only. */
async function bitlockerFlags(o: ServeOptions): Promise<Pick<OpenExportOptions, 'bitlockerProtector'>> {
  if (o.recoveryPasswordFile !== undefined && o.bekFile !== undefined) throw usage('give --recovery-password-file or --bek-file, not both');
  if (o.recoveryPasswordFile !== undefined) {
    return { bitlockerProtector: { kind: 'recovery-password', recoveryPassword: (await readFile(o.recoveryPasswordFile, 'utf8')).split(/\r?\n/)[0] ?? '' } };
  }
  if (o.bekFile !== undefined) {
    if ((await stat(o.bekFile)).size > MAX_BEK_BYTES) throw new VhdcryptError('BITLK_BAD_STARTUP_KEY', `${o.bekFile} is too large for a startup key (.BEK) file`);
    return { bitlockerProtector: { kind: 'startup-key', bek: await readFile(o.bekFile) } };
  }
  return {};
}

function usage(message: string): VhdcryptError {
  return new VhdcryptError('CLI_USAGE', message);
}

/** $XDG_RUNTIME_DIR when it exists (private to the user), else the OS temp directory. */
async function socketParent(): Promise<string> {
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg && (await stat(xdg).then((s) => s.isDirectory(), () => false))) return xdg;
  return tmpdir();
}

/** node:net's isIP, loaded on first use (every CLI start loads this module; few listen on an address). */
function isIP(s: string): number {
  return process.getBuiltinModule('node:net').isIP(s);
}

/** 127.0.0.0/8, ::1 and their IPv4-mapped forms. */
function isLoopbackIp(ip: string): boolean {
  const v4 = ip.replace(/^::ffff:/i, '');
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return isIP(ip) === 6 && /^(0{0,4}:){2,7}0{0,3}1$|^::1$/i.test(ip);
}

/** Whether every address `host` stands for is a loopback address (a name is resolved, as listen() will). */
async function isLoopback(host: string): Promise<boolean> {
  if (isIP(host) !== 0) return isLoopbackIp(host);
  const addrs = await process.getBuiltinModule('node:dns/promises').lookup(host, { all: true }).catch(() => []);
  return addrs.length > 0 && addrs.every((a) => isLoopbackIp(a.address));
}

/**
 * The TLS mode from the flags: TCP requires TLS unless --tls says otherwise; a Unix socket (reachable only as
 * its file permissions allow) has none unless credentials or --tls ask for it. Plaintext (off, or on, which
 * serves plaintext clients too) is refused on anything but loopback.
 */
async function tlsMode(o: ServeOptions, host: string | null): Promise<'require' | 'on' | 'off'> {
  if (o.tls !== undefined && !['require', 'on', 'off'].includes(o.tls)) throw usage('--tls expects require, on or off');
  const haveCredentials = o.tlsPsk !== undefined || o.tlsCertificates !== undefined;
  if (o.tlsPsk !== undefined && o.tlsCertificates !== undefined) throw usage('give --tls-psk or --tls-certificates, not both');
  if (o.tlsVerifyPeer === true && o.tlsCertificates === undefined) throw usage('--tls-verify-peer needs --tls-certificates');
  const mode = (o.tls ?? (host !== null || haveCredentials ? 'require' : 'off')) as 'require' | 'on' | 'off';
  if (mode === 'off' && haveCredentials) throw usage('--tls-psk and --tls-certificates have no use with --tls off');
  if (mode !== 'off' && !haveCredentials) {
    throw usage(`--tls ${mode}${o.tls === undefined ? ' (the default over TCP)' : ''} needs --tls-psk FILE or --tls-certificates DIR (or --tls off on a loopback address)`);
  }
  if (mode !== 'require' && host !== null && !(await isLoopback(host))) {
    throw usage(`--bind ${host} is not a loopback address: serving it with --tls ${mode} would hand the plaintext disk to anyone who can reach it; use --tls require with --tls-psk or --tls-certificates`);
  }
  return mode;
}

async function serve(image: string, o: ServeOptions): Promise<void> {
  if (o.socket !== undefined && o.port !== undefined) throw usage('give --socket or --port, not both');
  if (o.bind !== undefined && o.port === undefined) throw usage('--bind needs --port');
  if (o.passphraseFile !== undefined && o.keyFile !== undefined) throw usage('give --passphrase-file or --key-file, not both');
  let port: number | undefined;
  if (o.port !== undefined) {
    port = Number(o.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw usage(`--port expects 0..65535, got ${o.port}`);
  }
  let sectorSize: SectorSize | undefined;
  if (o.sectorSize !== undefined) {
    sectorSize = SECTOR_SIZES.find((s) => String(s) === o.sectorSize);
    if (sectorSize === undefined) throw usage(`--sector-size expects ${SECTOR_SIZES.join(' or ')}`);
  }
  const backend = o.backend as 'auto' | 'native' | 'wasm' | 'js' | undefined;
  if (backend !== undefined && !['auto', 'native', 'wasm', 'js'].includes(backend)) throw usage('--backend expects auto, native, wasm or js');

  if (o.writable === true && o.readOnly === true) throw usage('give --writable or --read-only, not both');
  const readOnly = o.writable !== true;
  const mode = await tlsMode(o, port !== undefined ? (o.bind ?? '127.0.0.1') : null);

  const limits = connectionLimits(o);
  const exportOptions: OpenExportOptions = {
    readOnly,
    ...(o.passphraseFile !== undefined ? { passphraseFile: o.passphraseFile } : {}),
    ...(o.keyFile !== undefined ? { keyFile: o.keyFile } : {}),
    ...(o.vault !== undefined ? { vault: o.vault } : {}),
    ...(o.plain === true ? { plain: true } : {}),
    ...(o.plaintext === true ? { plaintext: true } : {}),
    ...(o.secret !== undefined ? { secretId: o.secret } : {}),
    ...parentOptions(o),
    ...(sectorSize !== undefined ? { plainSectorSize: sectorSize } : {}),
    ...(backend !== undefined ? { backend } : {}),
    ...(o.replyThreads === false ? { replyThreads: false } : {}),
    ...(o.usePkcs11Token === true ? { usePkcs11Token: true } : {}),
    ...(await bitlockerFlags(o)),
  };
  const verbose = o.verbose === true;
  // The NBD server is loaded when serving starts, so other commands do not pay for it at start-up.
  const [{ NbdServer }, { openExportBacking }, { NbdTlsCredentials }] = await Promise.all([
    import('../nbd/index.js'),
    import('../nbd/open-export.js'),
    import('../nbd/tls.js'),
  ]);
  // Loaded before the image is unlocked, so a bad key file costs no KDF run; wiped once the server has closed.
  const credentials =
    mode === 'off'
      ? null
      : o.tlsPsk !== undefined
        ? await NbdTlsCredentials.loadPsk(o.tlsPsk)
        : await NbdTlsCredentials.loadX509(o.tlsCertificates!, o.tlsVerifyPeer === true);
  try {
    await serveWith();
  } finally {
    credentials?.dispose();
  }

  async function serveWith(): Promise<void> {
    // The PIN from --pin-file is held only while the key is unsealed, not while serving.
    const backing = await withPkcs11(o, (vaultCredentials) => openExportBacking(image, { ...exportOptions, vaultCredentials }));
    const server = new NbdServer(backing, {
      exportName: o.exportName ?? '',
      ...limits,
      ...(verbose ? { log: (line: string) => process.stderr.write(line + '\n') } : {}),
      ...(credentials !== null && mode !== 'off' ? { tls: { mode, credentials } } : {}),
    });

    let socketDir: string | null = null;
    let endpoint: NbdEndpoint;
    if (port !== undefined) endpoint = { port, host: o.bind ?? '127.0.0.1' };
    else if (o.socket !== undefined) endpoint = { socketPath: o.socket };
    else {
      socketDir = await mkdtemp(join(await socketParent(), 'vhdcrypt-nbd-'));
      endpoint = { socketPath: join(socketDir, 'nbd.sock') };
    }

    try {
      const uri = await server.listen(endpoint);
      // Tests and scripts wait for this line: the server accepts connections from now on. The URI comes first
      // (scripts cut it at the first space); then what a client gets, e.g. "(read-only, TLS-PSK required)".
      const tlsState = credentials === null ? 'no TLS' : `${credentials.label} ${mode === 'require' ? 'required' : 'optional'}`;
      process.stdout.write(`${uri} (${readOnly ? 'read-only' : 'writable'}, ${tlsState})\n`);
      await new Promise<void>((resolve) => {
        const stop = (sig: NodeJS.Signals): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          if (verbose) process.stderr.write(`vhdcrypt serve: ${sig}: finishing requests, flushing, closing the image\n`);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    } finally {
      // Flushes and closes the image consistently (close() waits for in-flight requests).
      await server.close();
      if (socketDir !== null) await rm(socketDir, { recursive: true, force: true });
    }
  }
}

/** --idle-timeout and --max-connections-per-peer, checked; absent ones keep the server's defaults. */
function connectionLimits(o: ServeOptions): { idleTimeoutMs?: number; maxConnectionsPerPeer?: number } {
  const out: { idleTimeoutMs?: number; maxConnectionsPerPeer?: number } = {};
  if (o.idleTimeout !== undefined) {
    const s = Number(o.idleTimeout);
    if (o.idleTimeout.trim() === '' || !Number.isFinite(s) || s < 0 || s > 86_400) throw usage('--idle-timeout expects 0..86400 seconds (0 = never)');
    out.idleTimeoutMs = Math.round(s * 1000);
  }
  if (o.maxConnectionsPerPeer !== undefined) {
    const n = Number(o.maxConnectionsPerPeer);
    if (!Number.isInteger(n) || n < 1 || n > 128) throw usage('--max-connections-per-peer expects 1..128');
    out.maxConnectionsPerPeer = n;
  }
  return out;
}

/** Registers `vhdcrypt serve`. */
export function registerServe(program: Command): void {
  const serveCmd = addParentOptions(program
    .command('serve'))
    .description('export an image over NBD: LUKS/plain volumes decrypted on the fly; an unencrypted image only with --plaintext')
    .argument('<image>', 'VHD or raw image')
    .option('--socket <path>', 'Unix socket to listen on (default: a new one under $XDG_RUNTIME_DIR or the temp dir)')
    .option('--port <n>', 'listen on TCP instead (0 = any free port)')
    .option('--bind <addr>', 'TCP address to bind (default 127.0.0.1); anything but loopback needs --tls require')
    .option('--tls <mode>', 'require (default over TCP), on (TLS offered, plaintext allowed; loopback only) or off (default on a Unix socket; loopback only over TCP)')
    .option('--tls-psk <file>', 'TLS-PSK keys, psktool format (username:hexkey lines); must not be readable by group or others')
    .option('--tls-certificates <dir>', 'X.509: DIR/server-cert.pem, DIR/server-key.pem (mode 600), DIR/ca-cert.pem')
    .option('--tls-verify-peer', 'with --tls-certificates: require a client certificate signed by DIR/ca-cert.pem')
    .option('--writable', 'accept writes (the default is a read-only export)')
    .option('--read-only', 'refuse writes (the default; kept for compatibility)')
    .option('--export-name <name>', 'export name (clients asking for "" get it too)')
    .option('--vault <uri>', 'vault holding the key (default: the LUKS2 token\'s vault, else the embedded vault)')
    .option('--passphrase-file <file>', 'LUKS (or BitLocker) passphrase from the first line of a file')
    .option('--key-file <file>', 'LUKS key file, or the raw key of a plain volume')
    .option('--plain', 'the image is a plain dm-crypt volume (no LUKS header)')
    .option('--secret <id>', 'plain volumes: the vault secret (a raw file has no VHD UUID to find it by); BitLocker: the Azure Disk Encryption BEK secret')
    .option('--recovery-password-file <file>', 'BitLocker: the 48-digit recovery password from a file (BitLocker disks are served decrypted, read-only)')
    .option('--bek-file <file>', 'BitLocker: the startup key (.BEK file)')
    .option('--plaintext', 'the image is not encrypted: export it as it is (refused when it has a LUKS header or a vault secret names it)')
    .option('--sector-size <n>', 'plain volumes: crypto sector size 512 or 4096')
    .option('--backend <name>', 'crypto backend: auto, native, wasm, js')
    .option('--no-reply-threads', 'answer every read on the main thread (by default, with the native backend on Linux, each plaintext (not TLS) connection to a raw or VHD container gets a native reply thread)')
    .option('--idle-timeout <seconds>', 'close a connection with nothing in flight and no request for this long (default 60; 0 = never, for long-lived attachments)')
    .option('--max-connections-per-peer <n>', 'connections one peer may hold at once: a Unix socket\'s uid, a TCP address (default 32 of the 128)')
    .option('--verbose', 'log dropped connections to stderr')
    .option('--use-pkcs11-token', "unlock through the header's systemd-pkcs11 token (the PIN) even when a vault token is there too");
  addPkcs11Options(serveCmd);
  serveCmd.action(async (image: string, o: ServeOptions) => serve(image, o));
}
