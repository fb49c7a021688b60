/**
 * Passphrases a person types. On a terminal: no echo (raw mode, as cryptsetup's prompt turns echo off), asked twice
 * for a new one, an empty one refused. From a pipe: one line, as scripts give it. The bytes read are ours and are
 * wiped once the passphrase has been copied out.
 */
import { VhdcryptError } from '../errors.js';

const ENTER = new Set([0x0a, 0x0d]);
const BACKSPACE = new Set([0x08, 0x7f]);
const CTRL_C = 0x03;
const CTRL_D = 0x04;
/** A passphrase longer than this is refused rather than buffered without end (cryptsetup's limit is 512 bytes). */
const MAX_BYTES = 512;

/** Read one line from a terminal without echo; SIGINT-like Ctrl-C rejects with ENGINE_ABORTED. */
function readHiddenLine(prompt: string): Promise<Uint8Array> {
  const stdin = process.stdin;
  const buf = Buffer.alloc(MAX_BYTES);
  let len = 0;
  // Echo goes off before the prompt appears: whatever is typed once it shows is never echoed by the terminal.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    const finish = (err: Error | null): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err !== null) {
        buf.fill(0);
        reject(err);
        return;
      }
      const line = new Uint8Array(buf.subarray(0, len));
      buf.fill(0);
      resolve(line);
    };
    const onData = (chunk: Buffer): void => {
      for (const b of chunk) {
        if (ENTER.has(b)) return finish(null);
        if (b === CTRL_C) return finish(new VhdcryptError('ENGINE_ABORTED', 'interrupted at the passphrase prompt'));
        if (b === CTRL_D && len === 0) return finish(null);
        if (BACKSPACE.has(b)) len = Math.max(0, len - 1);
        else if (len === MAX_BYTES) return finish(new VhdcryptError('CLI_USAGE', `the passphrase is longer than ${MAX_BYTES} bytes`));
        else buf[len++] = b;
      }
      chunk.fill(0);
    };
    stdin.resume();
    stdin.on('data', onData);
  });
}

/** One line of a non-terminal stdin, without its line ending. */
async function readPipedLine(): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    total += chunk.length;
    if (chunk.includes(0x0a) || total > MAX_BYTES + 2) break;
  }
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  let n = all.indexOf(0x0a);
  if (n < 0) n = all.length;
  if (n > 0 && all[n - 1] === 0x0d) n--;
  const line = new Uint8Array(all.subarray(0, n));
  all.fill(0);
  if (line.length > MAX_BYTES) {
    line.fill(0);
    throw new VhdcryptError('CLI_USAGE', `the passphrase is longer than ${MAX_BYTES} bytes`);
  }
  return line;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/**
 * A new passphrase (`what` names it in the prompt): typed twice on a terminal and compared, or one line from a pipe.
 * The caller owns the result and wipes it.
 */
export async function promptNewPassphrase(what: string): Promise<Uint8Array> {
  let pass: Uint8Array;
  if (process.stdin.isTTY) {
    pass = await readHiddenLine(`${what}: `);
    if (pass.length > 0) {
      const again = await readHiddenLine(`verify ${what}: `);
      const same = equalBytes(pass, again);
      again.fill(0);
      if (!same) {
        pass.fill(0);
        throw new VhdcryptError('CLI_USAGE', `the two ${what}s differ; nothing was written`);
      }
    }
  } else {
    pass = await readPipedLine();
  }
  if (pass.length === 0) throw new VhdcryptError('CLI_USAGE', `the ${what} is empty`);
  return pass;
}
