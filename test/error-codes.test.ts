/**
 * One table of codes: the README's exit-status table lists exactly the codes src/error-codes.ts declares, each
 * under the status it is declared with; the CLI and the NBD server answer with what the table says.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ERROR_CODES, EXIT, exitStatusOf, type ErrorCode } from '../src/error-codes.js';
import { VhdcryptError } from '../src/errors.js';
import { exitCodeFor } from '../src/cli/exit-codes.js';
import { nbdErrnoFor } from '../src/nbd/errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM } from '../src/nbd/protocol.js';
import { VAULT_ERROR_CODES } from '../src/vault/index.js';

const ROOT = join(import.meta.dirname, '..');

/** status -> codes, from the README's "Exit statuses" table. */
function readmeTable(): Map<number, string[]> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Exit statuses'));
  const table = new Map<number, string[]>();
  for (const line of section.split('\n').slice(1)) {
    if (line.startsWith('## ')) break;
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 4 || !/^\d+$/.test(cells[1]!)) continue;
    table.set(Number(cells[1]), [...cells[3]!.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]!));
  }
  return table;
}

describe('the table of error codes', () => {
  it('the README lists every declared code under its status, and nothing else', () => {
    const table = readmeTable();
    expect([...table.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 70, 130]);
    const listed = [...table.entries()].flatMap(([status, codes]) => codes.map((c) => [c, status] as const));
    const declared = Object.entries(ERROR_CODES).map(([c, spec]) => [c, spec.status] as const);
    const byName = (a: readonly [string, number], b: readonly [string, number]): number => a[0].localeCompare(b[0]);
    expect([...listed].sort(byName)).toEqual([...declared].sort(byName));
  });

  it('every code raised in src/ is declared (the compiler checks the classes; this catches strings built elsewhere)', () => {
    const files = spawnSync('git', ['ls-files', 'src', 'native'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim().split('\n');
    const raised = new Set<string>();
    for (const f of files) {
      const text = readFileSync(join(ROOT, f), 'utf8');
      for (const m of text.matchAll(/['"]((?:CLI|XTS|STRUCT|VHD|IMAGE|LUKS|VAULT|PKCS11|BITLK|ENGINE|FLEET|NBD)_[A-Z0-9_]+)['"]/g)) raised.add(m[1]!);
    }
    expect(raised.size).toBeGreaterThan(100);
    expect([...raised].filter((c) => !Object.hasOwn(ERROR_CODES, c))).toEqual([]);
  });

  it('the CLI maps each code to its declared status', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      expect([code, exitCodeFor(new VhdcryptError(code as ErrorCode, 'x'))]).toEqual([code, spec.status]);
    }
    expect(exitStatusOf('NOT_A_CODE')).toBe(EXIT.failed);
    // Codes users meet at the command line, as the README promises them.
    const expected: Record<string, number> = {
      ENGINE_NOT_ENCRYPTED: 3, ENGINE_STREAM_BAD_INPUT: 3, ENGINE_NO_KEY_SOURCE: 2, ENGINE_SAME_FILE: 2, XTS_EQUAL_KEY_HALVES: 4,
      VAULT_BAD_ARGUMENT: 2, VAULT_BAD_NAME: 2, LUKS_KEYSLOT_OUT_OF_RANGE: 2, LUKS_WRONG_PASSPHRASE: 4, VAULT_SECRET_DISABLED: 5,
      ENGINE_TEMP_EXISTS: 6, LUKS_UNSUPPORTED_CIPHER: 7, ENGINE_ABORTED: 130,
    };
    for (const [code, status] of Object.entries(expected)) expect([code, exitStatusOf(code)]).toEqual([code, status]);
    expect(VAULT_ERROR_CODES.length).toBeGreaterThan(30);
    expect(VAULT_ERROR_CODES.every((c) => c.startsWith('VAULT_'))).toBe(true);
  });

  it('the NBD server answers a backing error with the error value its code declares', () => {
    expect(nbdErrnoFor(new VhdcryptError('IMAGE_OUT_OF_RANGE', 'x'))).toBe(NBD_EINVAL);
    expect(nbdErrnoFor(new VhdcryptError('IMAGE_READ_ONLY', 'x'))).toBe(NBD_EPERM);
    expect(nbdErrnoFor(new VhdcryptError('ENGINE_NO_SPACE', 'x'))).toBe(NBD_ENOSPC);
    expect(nbdErrnoFor(new VhdcryptError('VHD_BAD_CHECKSUM', 'x'))).toBe(NBD_EIO);
    expect(nbdErrnoFor(Object.assign(new Error('disk full'), { code: 'ENOSPC' }))).toBe(NBD_ENOSPC);
    expect(nbdErrnoFor(Object.assign(new Error('read-only fs'), { code: 'EROFS' }))).toBe(NBD_EPERM);
    expect(nbdErrnoFor(new Error('anything else'))).toBe(NBD_EIO);
  });

  it('a decrypt of an image that is not encrypted exits 3 (ENGINE_NOT_ENCRYPTED)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vhdcrypt-codes-'));
    try {
      const img = join(dir, 'plain.vhd');
      expect(spawnSync('qemu-img', ['create', '-q', '-f', 'vpc', img, '8M']).status).toBe(0);
      const env = { ...process.env, VHDCRYPT_VAULT: join(dir, 'vault') };
      expect(spawnSync(process.execPath, [join(ROOT, 'bin', 'vhdcrypt.cjs'), 'vault', 'init'], { env }).status).toBe(0);
      const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'vhdcrypt.cjs'), 'decrypt', img, join(dir, 'out.vhd')], { env, encoding: 'utf8' });
      expect(r.stderr).toMatch(/^vhdcrypt: ENGINE_NOT_ENCRYPTED: /);
      expect(r.status).toBe(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
