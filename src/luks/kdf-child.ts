/**
 * One key derivation in a child process, so that abort can stop it at once.
 * A native KDF call (node:crypto's PBKDF2, @node-rs/argon2) cannot be stopped
 * once started: not on the libuv pool, and not in a worker thread either, since
 * Worker.terminate() and process.exit() both wait for the native call to
 * return. SIGKILL of a child ends the work and frees its memory immediately.
 */
import { LuksError } from './errors.js';
import { resolvePackage } from '../package-root.js';

/** What the child computes; the secret follows the JSON on its stdin. */
export type KdfChildRequest =
  | { readonly type: 'pbkdf2'; readonly salt: string; readonly iterations: number; readonly length: number; readonly hash: string }
  | { readonly type: 'argon2'; readonly salt: string; readonly options: Record<string, unknown> };

/**
 * The child (CommonJS, `node -e`): reads [u32 BE json length][json][secret] to
 * the end of stdin, writes the derived bytes to stdout, or a message to stderr
 * and exits 1. It wipes what it allocated; the kernel frees the rest when it ends.
 */
const CHILD = `'use strict';
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const buf = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  let out = null;
  try {
    const n = buf.readUInt32BE(0);
    const req = JSON.parse(buf.toString('utf8', 4, 4 + n));
    const secret = buf.subarray(4 + n);
    const salt = Buffer.from(req.salt, 'base64');
    out = req.type === 'pbkdf2'
      ? require('node:crypto').pbkdf2Sync(secret, salt, req.iterations, req.length, req.hash)
      : require(process.argv[1]).hashRawSync(secret, { ...req.options, salt });
  } catch (e) {
    process.stderr.write(String((e && e.message) || e));
    process.exitCode = 1;
  } finally {
    buf.fill(0);
  }
  if (out) process.stdout.write(out, () => out.fill(0));
});
`;

let argon2Path: string | undefined;

/** Derives `length` bytes in a child process; abort kills it and rejects with aborted(). The caller wipes the result. */
export function deriveInChild(
  request: KdfChildRequest,
  secret: Uint8Array,
  length: number,
  what: string,
  aborted: () => LuksError,
  signal: AbortSignal,
): Promise<Uint8Array> {
  argon2Path ??= resolvePackage(import.meta.url, '@node-rs/argon2');
  return new Promise((resolve, reject) => {
    // No inherited environment: NODE_OPTIONS of the parent (loaders, inspectors) has no business in the KDF.
    // node:child_process is loaded here, on first use: most runs never derive in a child, and loading it costs
    // every CLI start a few milliseconds.
    const { spawn } = process.getBuiltinModule('node:child_process');
    const child = spawn(process.execPath, ['-e', CHILD, argon2Path!], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let done = false;
    let frame: Buffer | null = null;
    const wipeOut = () => {
      for (const c of out) c.fill(0);
      frame?.fill(0);
    };
    const finish = (e: Error | null, key?: Uint8Array) => {
      if (done) return;
      done = true;
      signal.removeEventListener('abort', onAbort);
      if (e) reject(e);
      else resolve(key!);
    };
    const onAbort = () => {
      child.kill('SIGKILL');
      wipeOut();
      finish(aborted());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => {
      if (err.reduce((n, b) => n + b.length, 0) < 4096) err.push(c);
    });
    // A child that dies early breaks the pipe (EPIPE); its exit status below says why.
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      wipeOut();
      finish(new LuksError('LUKS_KDF_FAILED', `${what}: cannot start the KDF process (${e.message})`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      if (done) return;
      if (code !== 0) {
        wipeOut();
        const msg = Buffer.concat(err).toString('utf8').trim().slice(0, 500);
        finish(
          sig !== null
            ? new LuksError('LUKS_KDF_FAILED', `${what}: the KDF process was killed by ${sig} (out of memory?)`)
            : new LuksError('LUKS_BAD_HEADER', `${what}: refused its parameters (${msg})`),
        );
        return;
      }
      const key = new Uint8Array(length);
      let at = 0;
      for (const c of out) {
        if (at + c.length <= length) key.set(c, at);
        at += c.length;
      }
      wipeOut();
      if (at !== length) {
        key.fill(0);
        finish(new LuksError('LUKS_KDF_FAILED', `${what}: the KDF process returned ${at} bytes, expected ${length}`));
        return;
      }
      finish(null, key);
    });
    if (signal.aborted) {
      onAbort();
      return;
    }
    const json = Buffer.from(JSON.stringify(request), 'utf8');
    const f = (frame = Buffer.alloc(4 + json.length + secret.length));
    f.writeUInt32BE(json.length, 0);
    json.copy(f, 4);
    f.set(secret, 4 + json.length);
    child.stdin.end(f, () => f.fill(0));
  });
}
