/** Runs `vhdcrypt serve` (the compiled CLI) and waits for the line it prints once listening (the URI first). */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TOOL_ENV } from './nbd-harness.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ServeProcess {
  /** The URI: the listen line up to its first space. */
  readonly uri: string;
  /** The whole listen line, e.g. `nbds://127.0.0.1:10809/ (read-only, TLS-PSK required)`. */
  readonly line: string;
  readonly child: ChildProcess;
  /** SIGTERM (or the given signal), then wait for exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  stderr(): string;
}

export function startServe(args: string[], timeoutMs = 20_000, env: NodeJS.ProcessEnv = TOOL_ENV): Promise<ServeProcess> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'vhdcrypt.cjs'), 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vhdcrypt serve printed no URI within ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    const early = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`vhdcrypt serve exited (${code}) before listening: ${err}`));
    };
    child.once('exit', early);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.off('exit', early);
      const line = out.slice(0, nl).trim();
      resolve({
        uri: line.split(' ')[0]!,
        line,
        child,
        stderr: () => err,
        async stop(signal: NodeJS.Signals = 'SIGTERM') {
          if (child.exitCode !== null) return child.exitCode;
          child.kill(signal);
          const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
          const code = await exited;
          clearTimeout(t);
          return code;
        },
      });
    });
  });
}
