/** Test harness for the NBD tests: temp dirs, child processes with deadlines, waiting on sockets. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TOOL_ENV = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' };

export async function makeTempDir(prefix = 'vhdcrypt-nbd-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Run a command to completion with a deadline (killed with SIGKILL when it passes). */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; input?: Uint8Array; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? TOOL_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: err });
    });
    if (opts.input) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** Run and require exit status 0. */
export async function runOk(cmd: string, args: string[], opts: { timeoutMs?: number; input?: Uint8Array } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code ?? r.signal}): ${r.stderr}`);
  return r;
}

/** Poll until `path` exists, up to a deadline (bounded: no fixed sleeps). */
export async function waitForPath(path: string, timeoutMs = 10_000, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await stat(path).then(() => true, () => false)) return;
    if (child !== undefined && child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before ${path} appeared`);
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * True once a unix socket at `path` is listening: /proc/net/unix lists it with __SO_ACCEPTCON (0x10000) in its flags.
 * The file appears at bind(), before listen(): a client connecting in between is refused (seen on a loaded machine).
 * Checked without connecting, so a server that serves one client and exits is not used up by the probe.
 */
async function unixSocketListening(path: string): Promise<boolean> {
  const table = await readFile('/proc/net/unix', 'utf8');
  return table.split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f.length >= 8 && f.slice(7).join(' ') === path && (parseInt(f[3]!, 16) & 0x10000) !== 0;
  });
}

/** Start a long-running tool (nbdkit, qemu-nbd) that serves on `socket`; resolves once the socket is listening. */
export async function startServer(cmd: string, args: string[], socket: string): Promise<{ child: ChildProcess; stop: () => Promise<void> }> {
  const child = spawn(cmd, args, { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  try {
    await waitForPath(socket, 15_000, child);
    const deadline = Date.now() + 15_000;
    while (!(await unixSocketListening(socket))) {
      if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before ${socket} was listening`);
      if (Date.now() > deadline) throw new Error(`${socket} was not listening within 15000 ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${cmd}: ${(e as Error).message}: ${err}`);
  }
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  return { child, stop };
}
