/**
 * The recovery passphrase prompt as a person meets it, on a real pseudo-terminal (python3's pty module drives
 * the CLI): nothing typed is echoed, a new passphrase is asked twice, a mismatch or an empty one writes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeRaw, rawToVhd, removeDir, tempDir } from './fixtures/engine/helpers.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'bin', 'vhdcrypt.cjs');

/** Runs the CLI on a pty; each answer is typed once the screen shows the prompt before it. Returns status and screen. */
const DRIVER = `
import os, pty, sys, json, select
args, answers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(args[0], args)
screen = b''
def read_until(marker):
    global screen
    while marker not in screen:
        r, _, _ = select.select([fd], [], [], 60)
        if not r: raise SystemExit('timed out waiting for ' + marker.decode())
        try: data = os.read(fd, 4096)
        except OSError: return False
        if not data: return False
        screen += data
    return True
for prompt, answer in answers:
    if not read_until(prompt.encode()): break
    os.write(fd, answer.encode())
while True:
    try: data = os.read(fd, 4096)
    except OSError: break
    if not data: break
    screen += data
_, status = os.waitpid(pid, 0)
sys.stdout.write(json.dumps({'status': os.waitstatus_to_exitcode(status), 'screen': screen.decode('utf8', 'replace')}))
`;

let dir: string;
let src: string;
let pass: string;
let env: NodeJS.ProcessEnv;

function onPty(args: string[], answers: Array<[string, string]>): { status: number; screen: string } {
  const r = spawnSync('/usr/bin/python3', ['-c', DRIVER, JSON.stringify([process.execPath, CLI, ...args]), JSON.stringify(answers)], { env, encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { status: number; screen: string };
}

beforeAll(() => {
  dir = tempDir('cli-prompt');
  env = { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') };
  const raw = join(dir, 'src.raw');
  makeRaw(raw, 4 << 20, [[0, 1 << 20]]);
  src = join(dir, 'src.vhd');
  rawToVhd(raw, src, 'dynamic');
  pass = join(dir, 'pass.txt');
  writeFileSync(pass, 'the first keyslot\n');
});
afterAll(() => removeDir(dir));

describe('the recovery passphrase prompt on a terminal', () => {
  it('is not echoed, is asked twice, and opens the image', () => {
    const secret = 'correct horse battery staple';
    const enc = join(dir, 'ok.vhd');
    const r = onPty(['encrypt', src, enc, '--passphrase-file', pass, '--add-recovery-passphrase'], [
      ['recovery passphrase: ', secret + '\r'],
      ['verify recovery passphrase: ', secret + '\r'],
    ]);
    expect(r.screen).not.toContain(secret);
    expect(r.status, r.screen).toBe(0);
    const typed = join(dir, 'typed.txt');
    writeFileSync(typed, secret);
    const d = spawnSync(process.execPath, [CLI, 'decrypt', enc, join(dir, 'ok.dec.vhd'), '--passphrase-file', typed], { env, encoding: 'utf8' });
    expect(d.status, d.stderr).toBe(0);
  });

  it('two different answers, or an empty one, are refused (exit 2) and leave no output', () => {
    const mismatch = onPty(['encrypt', src, join(dir, 'mm.vhd'), '--passphrase-file', pass, '--add-recovery-passphrase'], [
      ['recovery passphrase: ', 'one thing\r'],
      ['verify recovery passphrase: ', 'another\r'],
    ]);
    expect(mismatch.screen).toMatch(/CLI_USAGE: the two recovery passphrases differ/);
    expect(mismatch.status).toBe(2);
    const empty = onPty(['encrypt', src, join(dir, 'empty.vhd'), '--passphrase-file', pass, '--add-recovery-passphrase'], [['recovery passphrase: ', '\r']]);
    expect(empty.screen).toMatch(/CLI_USAGE: the recovery passphrase is empty/);
    expect(empty.status).toBe(2);
    expect(existsSync(join(dir, 'mm.vhd')) || existsSync(join(dir, 'empty.vhd'))).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes('vhdcrypt-tmp'))).toEqual([]);
  });
});
