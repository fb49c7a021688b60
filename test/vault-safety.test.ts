/**
 * Vault safety: a missing vault is never silently created (only `vault init`
 * and the default location on first use make one), the audit chain's head is
 * anchored, rotate-kek survives secrets it cannot parse and no error carries a
 * secret's value, least-privilege principals open disks after a rotation,
 * principal names cannot forge audit lines, and a run killed between sealing
 * and its first journal write leaves no orphaned secret.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openVault } from '../src/vault/index.js';
import { ensureDist, root } from './fixtures/vault/dist.js';
import { cleanupTempDirs, expectCode, tempDir } from './fixtures/vault/temp-vault.js';
import { makeRaw } from './fixtures/engine/helpers.js';

afterAll(cleanupTempDirs);

const MIB = 1 << 20;
let work: string;
let src: string;

beforeAll(() => {
  ensureDist(true);
  work = tempDir();
  src = join(work, 'src.raw');
  makeRaw(src, 4 * MIB, [[0, MIB]]);
});

/** The compiled CLI with a clean vault environment (no $VHDCRYPT_VAULT unless given). */
function cli(args: string[], env: Record<string, string> = {}, input?: string): { status: number | null; stdout: string; stderr: string } {
  const base: Record<string, string | undefined> = { ...process.env };
  for (const k of ['VHDCRYPT_VAULT', 'VHDCRYPT_VAULT_TOKEN', 'VHDCRYPT_VAULT_PASSPHRASE', 'XDG_DATA_HOME']) delete base[k];
  const r = spawnSync(process.execPath, [join(root, 'bin', 'vhdcrypt.js'), ...args], { env: { ...base, ...env }, encoding: 'utf8', input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('only vault init creates a vault', () => {
  test('encrypt --vault file:<typo> is VAULT_NOT_FOUND (exit 5), creates nothing and leaves no output', () => {
    const real = join(work, 'real-vault');
    expect(cli(['vault', 'init', '--vault', `file:${real}`]).status).toBe(0);
    const typo = join(work, 'reall-vault');
    const dst = join(work, 'typo.img');
    const r = cli(['encrypt', src, dst, '--vault', `file:${typo}`]);
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(typo)).toBe(false);
    expect(existsSync(dst)).toBe(false);
    // The same through $VHDCRYPT_VAULT: an explicit choice, so it must exist too.
    const viaEnv = cli(['encrypt', src, dst], { VHDCRYPT_VAULT: typo });
    expect(viaEnv.status, viaEnv.stderr).toBe(5);
    expect(viaEnv.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(typo)).toBe(false);
    // An existing directory that holds no vault is not made into one either.
    const empty = join(work, 'empty-dir');
    mkdirSync(empty);
    expect(cli(['encrypt', src, dst, '--vault', `file:${empty}`]).status).toBe(5);
    expect(existsSync(join(empty, 'vault.sqlite'))).toBe(false);
    // The vault that was initialised works.
    const ok = cli(['encrypt', src, dst, '--vault', `file:${real}`]);
    expect(ok.status, ok.stderr).toBe(0);
  });

  test('a LUKS2 token naming a moved vault makes decrypt fail with VAULT_NOT_FOUND, not create it', () => {
    const v = join(work, 'moving-vault');
    expect(cli(['vault', 'init', '--vault', `file:${v}`]).status).toBe(0);
    const enc = join(work, 'moved.img');
    expect(cli(['encrypt', src, enc, '--vault', `file:${v}`]).status).toBe(0);
    const moved = join(work, 'moved-vault-new-home');
    expect(spawnSync('mv', [v, moved]).status).toBe(0);
    const dec = join(work, 'moved.dec.img');
    const r = cli(['decrypt', enc, dec]);
    expect(r.status, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/VAULT_NOT_FOUND/);
    expect(existsSync(v)).toBe(false);
    expect(existsSync(dec)).toBe(false);
  });

  test('the default location is created on first use with a one-time notice naming the key file and how to back it up', () => {
    const xdg = join(work, 'xdg');
    mkdirSync(xdg);
    const home = join(xdg, 'vhdcrypt');
    const first = cli(['encrypt', src, join(work, 'default1.img')], { XDG_DATA_HOME: xdg });
    expect(first.status, first.stderr).toBe(0);
    expect(existsSync(join(home, 'vault.sqlite'))).toBe(true);
    expect(first.stderr).toContain(join(home, 'master.key'));
    expect(first.stderr).toMatch(/back up/i);
    const second = cli(['encrypt', src, join(work, 'default2.img')], { XDG_DATA_HOME: xdg });
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toBe('');
    // Reading commands do not create it: decrypt/info against a fresh default location say VAULT_NOT_FOUND.
    const xdg2 = join(work, 'xdg2');
    mkdirSync(xdg2);
    const show = cli(['vault', 'show'], { XDG_DATA_HOME: xdg2 });
    expect(show.status).toBe(5);
    expect(existsSync(join(xdg2, 'vhdcrypt'))).toBe(false);
  });
});

describe('the audit chain head is anchored', () => {
  async function vaultWithHistory(): Promise<string> {
    const dir = join(tempDir(), 'v');
    const v = await openVault(`file:${dir}`, { create: true });
    await v.setSecret('a', 'value-a');
    await v.getSecret('a');
    await v.setSecret('b', 'value-b');
    expect((await v.readAudit()).length).toBeGreaterThanOrEqual(3);
    await v.close();
    return dir;
  }

  /** What someone with write access to the database file does: drop the append-only trigger, then delete. */
  function deleteRows(dir: string, where: string): number {
    const d = new Database(join(dir, 'vault.sqlite'));
    try {
      d.exec('DROP TRIGGER IF EXISTS audit_append_only_delete');
      return d.prepare(`DELETE FROM audit ${where}`).run().changes;
    } finally {
      d.close();
    }
  }

  test('deleting the newest entry is VAULT_TAMPERED on reopen', async () => {
    const dir = await vaultWithHistory();
    expect(deleteRows(dir, 'WHERE seq = (SELECT MAX(seq) FROM audit)')).toBe(1);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });

  test('deleting the newest entries while a handle is open is VAULT_TAMPERED on readAudit and on the next call', async () => {
    const dir = await vaultWithHistory();
    const v = await openVault(`file:${dir}`);
    try {
      expect(deleteRows(dir, 'WHERE seq > (SELECT MAX(seq) - 2 FROM audit)')).toBe(2);
      await expectCode(v.readAudit(), 'VAULT_TAMPERED');
    } finally {
      await v.close();
    }
  });

  test('deleting every entry is VAULT_TAMPERED; so is deleting the head with them', async () => {
    const dir = await vaultWithHistory();
    expect(deleteRows(dir, '')).toBeGreaterThan(3);
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
    const d = new Database(join(dir, 'vault.sqlite'));
    d.prepare("DELETE FROM meta WHERE k = 'audit_head'").run();
    d.close();
    await expectCode(openVault(`file:${dir}`), 'VAULT_TAMPERED');
  });

  test('an untouched log still verifies, across reopenings', async () => {
    const dir = await vaultWithHistory();
    const v = await openVault(`file:${dir}`);
    const log = await v.readAudit();
    expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
    await v.close();
  });
});
