/**
 * The vault server's TLS material. Given --tls-cert/--tls-key, those files; else a private CA and a server
 * certificate (ECDSA P-256, SHA-256) kept in `<vault dir>/server/`, generated on first start and reused: the CA
 * for as long as it is valid, the server certificate while it is valid, issued by that CA and names the listen
 * address (RFC 5280 §4.2.1.6 subjectAltName: the address, localhost and 127.0.0.1).
 *
 * node:crypto makes keys but cannot issue certificates, so the `openssl` command signs them. Private keys are made
 * by node:crypto and written to 0600 files before openssl reads them; no key ever appears in a process argument.
 */
import { execFile } from 'node:child_process';
import { X509Certificate, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { VaultError } from '../vault/index.js';

const execFileAsync = promisify(execFile);
const CA_DAYS = 3650;
// CA/Browser Forum's ceiling for server certificates was 825 days when clients began enforcing one.
const SERVER_DAYS = 825;
// A certificate expiring within this is renewed at start.
const RENEW_MS = 7 * 86_400_000;

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The CA certificate clients trust (generated material), else the given certificate. */
  readonly caPath: string;
  /** SHA-256 fingerprint of the certificate at caPath, colon-separated hex as openssl prints it. */
  readonly fingerprint: string;
}

export interface TlsFiles {
  readonly certPath: string;
  readonly keyPath: string;
}

function tlsError(message: string, cause?: unknown): VaultError {
  return new VaultError('VAULT_SERVER_TLS', message, cause === undefined ? undefined : { cause });
}

/** Write a new file with mode 0600 (refusing an existing one); the caller wipes what it wrote. */
function writePrivate(path: string, data: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

function newP256KeyPem(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync('openssl', args, { cwd, timeout: 60_000 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw tlsError('the openssl command is needed to issue the server certificate (install openssl, or give --tls-cert and --tls-key)', e);
    throw tlsError(`openssl failed to issue the server certificate: ${String(err.stderr ?? err.message).trim().split('\n')[0]}`, e);
  }
}

/** The subjectAltName entries for a listen host: the host itself, localhost and 127.0.0.1. */
function altNames(host: string): string[] {
  const ips = new Set<string>(['127.0.0.1']);
  const dns = new Set<string>(['localhost']);
  if (isIP(host) !== 0) ips.add(host);
  else dns.add(host);
  return [...[...dns].map((d, i) => `DNS.${i + 1} = ${d}`), ...[...ips].map((ip, i) => `IP.${i + 1} = ${ip}`)];
}

function config(host: string): string {
  return [
    '[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = vhdcrypt vault CA',
    '[ca_ext]', 'basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash',
    '[server_ext]', 'basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = serverAuth',
    'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid', 'subjectAltName = @alt', '[alt]', ...altNames(host), '',
  ].join('\n');
}

function certificate(path: string): X509Certificate | null {
  try {
    return new X509Certificate(readFileSync(path));
  } catch {
    return null;
  }
}

function usable(c: X509Certificate | null): c is X509Certificate {
  return c !== null && Date.parse(c.validTo) - Date.now() > RENEW_MS && Date.parse(c.validFrom) <= Date.now() + 60_000;
}

function names(c: X509Certificate, host: string): boolean {
  return (isIP(host) !== 0 ? c.checkIP(host) : c.checkHost(host)) !== undefined && c.checkIP('127.0.0.1') !== undefined;
}

/** Replace `path` with a new 0600 file holding `data`, atomically. */
function replacePrivate(path: string, data: string): void {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  writePrivate(tmp, data);
  renameSync(tmp, path);
}

/** The generated CA and server certificate for `host` in `<vaultDir>/server/`, made or renewed as needed. */
async function generated(vaultDir: string, host: string): Promise<TlsMaterial> {
  const dir = join(vaultDir, 'server');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caKey = join(dir, 'ca.key');
  const caPem = join(dir, 'ca.pem');
  const serverKey = join(dir, 'server.key');
  const serverPem = join(dir, 'server.pem');
  const work = join(dir, `.issue-${randomBytes(6).toString('hex')}`);
  mkdirSync(work, { mode: 0o700 });
  const cleanup: string[] = [];
  try {
    const cnf = join(work, 'openssl.cnf');
    writePrivate(cnf, config(host));
    cleanup.push(cnf);
    let ca = certificate(caPem);
    if (!usable(ca) || !existsSync(caKey)) {
      replacePrivate(caKey, newP256KeyPem());
      const out = join(work, 'ca.pem');
      cleanup.push(out);
      await openssl(['req', '-new', '-x509', '-config', cnf, '-extensions', 'ca_ext', '-key', caKey, '-sha256', '-days', String(CA_DAYS),
        '-set_serial', `0x${randomBytes(16).toString('hex')}`, '-out', out], work);
      chmodSync(out, 0o644);
      renameSync(out, caPem);
      ca = certificate(caPem);
      if (ca === null) throw tlsError(`openssl wrote no readable CA certificate to ${caPem}`);
    }
    let server = certificate(serverPem);
    if (!usable(server) || !names(server, host) || !server.checkIssued(ca) || !existsSync(serverKey)) {
      replacePrivate(serverKey, newP256KeyPem());
      const csr = join(work, 'server.csr');
      const out = join(work, 'server.pem');
      cleanup.push(csr, out);
      await openssl(['req', '-new', '-config', cnf, '-key', serverKey, '-subj', `/CN=${host.replace(/[/=+,\\]/g, '_')}`, '-out', csr], work);
      await openssl(['x509', '-req', '-in', csr, '-CA', caPem, '-CAkey', caKey, '-set_serial', `0x${randomBytes(16).toString('hex')}`,
        '-days', String(SERVER_DAYS), '-sha256', '-extfile', cnf, '-extensions', 'server_ext', '-out', out], work);
      renameSync(out, serverPem);
      server = certificate(serverPem);
      if (server === null) throw tlsError(`openssl wrote no readable server certificate to ${serverPem}`);
    }
    return { cert: readFileSync(serverPem), key: readFileSync(serverKey), caPath: caPem, fingerprint: ca.fingerprint256 };
  } finally {
    for (const f of cleanup) {
      try {
        unlinkSync(f);
      } catch {
        // Already renamed into place.
      }
    }
    try {
      // The work directory is empty now.
      rmdirSync(work);
    } catch {
      // Left behind only if a file in it could not be removed; it holds no key.
    }
  }
}

/** The given certificate and key files; a key file others may read is refused (as ssh refuses one). */
function given(files: TlsFiles): TlsMaterial {
  let cert: Buffer;
  let key: Buffer;
  try {
    const st = statSync(files.keyPath);
    if ((st.mode & 0o077) !== 0) throw tlsError(`${files.keyPath} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    cert = readFileSync(files.certPath);
    key = readFileSync(files.keyPath);
  } catch (e) {
    if (e instanceof VaultError) throw e;
    throw tlsError(`cannot read the TLS certificate or key: ${(e as Error).message}`, e);
  }
  let c: X509Certificate;
  try {
    c = new X509Certificate(cert);
  } catch (e) {
    throw tlsError(`${files.certPath} is not a PEM certificate`, e);
  }
  return { cert, key, caPath: files.certPath, fingerprint: c.fingerprint256 };
}

/** The TLS material to serve `host` with. */
export async function serverTlsMaterial(vaultDir: string, host: string, files?: TlsFiles): Promise<TlsMaterial> {
  return files !== undefined ? given(files) : generated(vaultDir, host);
}
