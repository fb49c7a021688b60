/**
 * A SoftHSM2 token for one test file: its own SOFTHSM2_CONF and token directory in a temp dir, initialised with
 * softhsm2-util --init-token --free, keys and certificates put in with pkcs11-tool (OpenSC) and openssl.
 * Set in process.env (SOFTHSM2_CONF) so in-process calls and child processes see the same token.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SOFTHSM_MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p)) ?? '/usr/lib/softhsm/libsofthsm2.so';
export const SO_PIN = '12345678';
export const USER_PIN = '1234';

export function haveSoftHsm(): boolean {
  return existsSync(SOFTHSM_MODULE) && spawnSync('softhsm2-util', ['--version']).status === 0 && spawnSync('pkcs11-tool', ['--help']).status !== null;
}

export interface SoftHsm {
  readonly dir: string;
  readonly conf: string;
  readonly module: string;
  /** Environment for child processes: SOFTHSM2_CONF plus the module. */
  readonly env: NodeJS.ProcessEnv;
  initToken(label: string, pin?: string): void;
  /** pkcs11-tool with the module and the token, logged in with the user PIN. */
  tool(token: string, args: string[], input?: Buffer): Buffer;
  /** An RSA key pair made by openssl, imported with its self-signed certificate; returns the cert PEM path. */
  importRsaWithCert(token: string, label: string, id: string, bits?: number): string;
  cleanup(): void;
}

export function createSoftHsm(): SoftHsm {
  const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  process.env.SOFTHSM2_CONF = conf;
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const tool = (token: string, args: string[], input?: Buffer): Buffer =>
    execFileSync('pkcs11-tool', ['--module', SOFTHSM_MODULE, '--token-label', token, '--login', '--pin', USER_PIN, ...args], { env, input, stdio: ['pipe', 'pipe', 'pipe'] });
  return {
    dir,
    conf,
    module: SOFTHSM_MODULE,
    env,
    initToken(label, pin = USER_PIN) {
      execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', SO_PIN, '--pin', pin], { env, stdio: 'pipe' });
    },
    tool,
    importRsaWithCert(token, label, id, bits = 2048) {
      const key = join(dir, `${label}.key.pem`);
      const cert = join(dir, `${label}.cert.pem`);
      execFileSync('openssl', ['req', '-new', '-x509', '-newkey', `rsa:${bits}`, '-nodes', '-keyout', key, '-subj', `/CN=${label}`, '-days', '3650', '-out', cert], { stdio: 'pipe' });
      const keyDer = execFileSync('openssl', ['pkcs8', '-topk8', '-nocrypt', '-in', key, '-outform', 'DER']);
      const certDer = execFileSync('openssl', ['x509', '-in', cert, '-outform', 'DER']);
      writeFileSync(join(dir, `${label}.key.der`), keyDer);
      writeFileSync(join(dir, `${label}.cert.der`), certDer);
      tool(token, ['--write-object', join(dir, `${label}.key.der`), '--type', 'privkey', '--label', label, '--id', id, '--usage-decrypt']);
      tool(token, ['--write-object', join(dir, `${label}.cert.der`), '--type', 'cert', '--label', label, '--id', id]);
      rmSync(key);
      rmSync(join(dir, `${label}.key.der`));
      return cert;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
